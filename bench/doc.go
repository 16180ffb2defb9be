// Package bench measures sessioncache against its ceilings and against what
// users would pick instead, in one `go test -bench` run: raw go-redis GET and
// SET on the same server and client pool, a naive Redis store without Lua
// (WATCH/MULTI), and the SQL design the store replaces, on PostgreSQL.
//
// The baselines live here, not in the library, so that the library's import
// graph stays go-redis, uuid and the standard library. bench/README.md has
// the commands, the machine and the results.
package bench
