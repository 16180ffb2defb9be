// Package deploytest checks the deployment files against the service:
// the Kubernetes overlays of deploy/kubernetes, rendered by kubectl
// kustomize and run pod by pod by a kubelet emulation
// (internal/kubelet), the Dockerfile and docker-compose.yml, run the same
// way, the monitoring and https components and deploy/README.md's sizing
// guide. Least privilege is run, not only read: every Redis with its
// default user off and the service's ACL user confined to the rules file,
// the service scraped on its metrics port alone, the wrong ACL refused;
// the NetworkPolicies, which the emulation does not enforce, are
// evaluated for who reaches which port. It
// holds tests only, in a module of its own so that the Kubernetes API
// types they decode stay out of the service's module; go.work joins it.
//
// The service is its binary, built from this tree
// (internal/servicetest); the settings it accepts are the ones
// `sessioncache -settings` lists, from the one table that defines them
// (cmd/sessioncache/config.go).
//
// The kubelet and Compose tests run as root, with kubectl, unshare,
// setpriv, mount and the machine's redis-server (.ci/run); elsewhere they
// skip, or fail under SESSIONCACHE_TEST_REQUIRE_REAL=1.
package deploytest
