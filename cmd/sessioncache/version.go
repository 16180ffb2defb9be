package main

import (
	"runtime"
	"runtime/debug"
)

// version and revision name the build when set at link time:
//
//	go build -ldflags "-X main.version=v1.4.0 -X main.revision=$(git rev-parse HEAD)" ./cmd/sessioncache
//
// Otherwise they come from the build information Go embeds: the module's
// version (v1.4.0 when installed with go install ...@v1.4.0; a pseudo-version
// or (devel) when built in a checkout) and the VCS revision (absent when
// built with -buildvcs=false or outside a repository).
var version, revision string

// build names this binary: sessioncache_build_info and -version show it.
type build struct {
	version, goVersion, revision string
}

func readBuild() build {
	b := build{version: version, goVersion: runtime.Version(), revision: revision}
	if info, ok := debug.ReadBuildInfo(); ok {
		if b.version == "" {
			b.version = info.Main.Version
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && b.revision == "" {
				b.revision = s.Value
			}
		}
	}
	if b.version == "" {
		b.version = "(devel)"
	}
	if b.revision == "" {
		b.revision = "unknown"
	}
	return b
}

// String is what -version prints.
func (b build) String() string {
	return "sessioncache " + b.version + " (" + b.goVersion + ", revision " + b.revision + ")"
}
