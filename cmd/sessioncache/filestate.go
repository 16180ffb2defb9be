package main

import "os"

// fileState is what a stat of a file shows: enough to tell that it changed,
// whether it was written in place, renamed into place, or replaced by the
// swap of a symbolic link (a Kubernetes Secret volume).
type fileState struct {
	info os.FileInfo // nil: the file could not be stat'ed
}

func statFile(name string) fileState {
	fi, err := os.Stat(name)
	if err != nil {
		return fileState{}
	}
	return fileState{fi}
}

// same reports whether a and b show one file, unchanged.
func (a fileState) same(b fileState) bool {
	if a.info == nil || b.info == nil {
		return a.info == nil && b.info == nil
	}
	return os.SameFile(a.info, b.info) && a.info.ModTime().Equal(b.info.ModTime()) && a.info.Size() == b.info.Size()
}

// sameFile reports whether a and b show one file (device and inode),
// changed or not.
func (a fileState) sameFile(b fileState) bool {
	return a.info != nil && b.info != nil && os.SameFile(a.info, b.info)
}
