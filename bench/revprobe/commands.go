package main

import (
	"context"
	"strconv"
	"strings"
)

// commandStats sums, over the masters, the calls of each command in INFO
// commandstats.
func (r *redisSetup) commandStats(ctx context.Context) (map[string]int64, error) {
	infos, err := r.infos(ctx, "commandstats")
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, info := range infos {
		for _, line := range strings.Split(info, "\n") {
			rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_")
			if !ok {
				continue
			}
			name, fields, _ := strings.Cut(rest, ":")
			for _, kv := range strings.Split(fields, ",") {
				if v, ok := strings.CutPrefix(kv, "calls="); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					out[name] += n
				}
			}
		}
	}
	return out, nil
}

// commandKind sorts a command: the revocation feed's heartbeats (PING on
// each subscription), housekeeping (each instance's check every 10 s of
// the eviction policy, INFO, and of the script cache, SCRIPT LOAD; this
// probe's INFO; connection set-up), or data (anything that reads or writes
// sessions).
func commandKind(name string) string {
	switch name {
	case "ping":
		return "heartbeat"
	case "info", "script|load", "client|setinfo", "client|setname", "hello", "subscribe", "unsubscribe", "cluster|slots",
		"cluster|shards", "cluster|nodes", "cluster|info", "command", "select", "readonly":
		return "housekeeping"
	}
	return "data"
}
