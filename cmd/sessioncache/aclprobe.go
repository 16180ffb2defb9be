package main

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// aclRulesFile is where the repository keeps the Redis ACL rules of the
// service's user, for the error that names it.
const aclRulesFile = "deploy/kubernetes/base/redis-acl/rules"

// errACL is a command the service needs that Redis's ACL refuses its user.
var errACL = errors.New("the ACL of Redis refuses the service's user a command it needs")

// probeScript is what the probe runs with EVAL, then EVALSHA.
const probeScript = "return 1"

// probeACL sends Redis every command the store and the service send (the
// scripts' own calls among them), once each, on keys and a channel of the
// service's key prefix. Redis checks a script's calls against the ACL of
// the user that runs it, one by one as the script reaches them: a missing
// command would fail a script half way, after some of its writes. The probe
// finds it before the first request, and names it. Only a refusal of the
// ACL (NOPERM) fails it; anything else (a full Redis refusing the write)
// is the rest of the readiness check's business. The commands and what
// they run on are aclProbeCommands's; the rules file lists the same
// (TestACLRulesAreTheCommandsUsed).
func probeACL(ctx context.Context, rdb redis.UniversalClient, prefix string) error {
	cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, args := range aclProbeCommands(prefix) {
			p.Do(ctx, args...)
		}
		return nil
	})
	for _, c := range cmds {
		if err := c.Err(); err != nil && isNoPerm(err) {
			return aclError(err, prefix)
		}
	}
	var re redis.Error
	if err != nil && !errors.As(err, &re) {
		// Not an answer of Redis: the probe did not happen.
		return err
	}
	return nil
}

// isNoPerm reports whether Redis refused a command for its ACL.
func isNoPerm(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "NOPERM") || strings.Contains(err.Error(), ": NOPERM ")
}

// aclError is the readiness error of an ACL refusal: Redis's message
// names the command (or key, or channel) refused.
func aclError(err error, prefix string) error {
	return fmt.Errorf("%w: %s (give the user the rules of %s, for the key prefix %s)", errACL, err.Error(), aclRulesFile, prefix)
}

// aclProbeCommands are the probe's commands: a hash and a sorted set of
// one slot under the prefix, written, read and deleted, and the
// revocation channel, published to with a message its subscribers ignore.
func aclProbeCommands(prefix string) [][]any {
	var id [8]byte
	rand.Read(id[:])
	tag := "{" + hex.EncodeToString(id[:]) + "}"
	h, z := prefix+"aclprobe:"+tag+":h", prefix+"aclprobe:"+tag+":z"
	sum := sha1.Sum([]byte(probeScript))
	at := strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10)
	return [][]any{
		{"ping"},
		{"info", "memory"},
		{"time"},
		{"script", "load", probeScript},
		{"eval", probeScript, "0"},
		{"evalsha", hex.EncodeToString(sum[:]), "0"},
		{"hset", h, "f", "1"},
		{"pexpire", h, "60000"},
		{"pexpireat", h, at},
		{"pttl", h},
		{"hget", h, "f"},
		{"hmget", h, "f"},
		{"hexists", h, "f"},
		{"hkeys", h},
		{"zadd", z, "1", "m"},
		{"pexpire", z, "60000"},
		{"zscore", z, "m"},
		{"zcount", z, "-inf", "+inf"},
		{"zrange", z, "0", "-1"},
		{"zrangebyscore", z, "-inf", "+inf"},
		{"zrevrange", z, "0", "-1"},
		{"zrevrank", z, "m"},
		{"zrem", z, "m"},
		{"set", h + ":s", "1", "px", "60000"},
		{"get", h + ":s"},
		// The move onto a cluster's (a payload RESTORE refuses, after
		// the ACL let it through).
		{"hgetall", h},
		{"exists", h},
		{"pexpiretime", h},
		{"dump", h},
		{"restore", h + ":r", "60000", "x"},
		{"zunionstore", z + ":u", "1", z},
		{"scan", "0", "match", prefix + "aclprobe:*", "count", "1"},
		{"hdel", h, "f"},
		{"del", h, z, h + ":s", z + ":u"},
		{"publish", prefix + "revoked", "aclprobe"},
		{"wait", "0", "0"},
	}
}
