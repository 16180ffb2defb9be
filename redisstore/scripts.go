package redisstore

import (
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/lua"
)

// Scripts run through EVALSHA and fall back to EVAL on NOSCRIPT, so a script
// cache emptied by a restart or a failover heals itself on first use.
var (
	scriptIssue     = redis.NewScript(lua.Issue)
	scriptEvict     = redis.NewScript(lua.Evict)
	scriptRotate    = redis.NewScript(lua.Rotate)
	scriptRevoke    = redis.NewScript(lua.Revoke)
	scriptRevokeAll = redis.NewScript(lua.RevokeAll)
	scriptList      = redis.NewScript(lua.List)
	scriptInspect   = redis.NewScript(lua.Inspect)
	scriptTouch     = redis.NewScript(lua.Touch)
	scriptLegacy    = redis.NewScript(lua.Legacy)
	scriptImport    = redis.NewScript(lua.Import)
	scriptLookup    = redis.NewScript(lua.Lookup)

	allScripts = []*redis.Script{scriptIssue, scriptEvict, scriptRotate, scriptRevoke, scriptRevokeAll, scriptList, scriptInspect, scriptTouch,
		scriptLegacy, scriptImport, scriptLookup}
)

// reply is a script's answer: a code, Redis's time when the script ran
// (unix ms), and fields.
type reply struct {
	code int64
	now  int64
	arr  []any
}

func parseReply(v any, err error) (reply, error) {
	if err != nil {
		return reply{}, fmt.Errorf("redisstore: %w", err)
	}
	arr, ok := v.([]any)
	if !ok || len(arr) < 2 {
		return reply{}, fmt.Errorf("redisstore: unexpected script reply %T", v)
	}
	code, ok1 := arr[0].(int64)
	now, ok2 := arr[1].(int64)
	if !ok1 || !ok2 {
		return reply{}, fmt.Errorf("redisstore: unexpected script reply (%T, %T)", arr[0], arr[1])
	}
	return reply{code: code, now: now, arr: arr[2:]}, nil
}

// unexpected is the error for a reply code that script does not give.
func (r reply) unexpected(script string) error {
	return fmt.Errorf("redisstore: unexpected reply code %d from %s", r.code, script)
}

// field returns the i-th field after the code and the time, or "" if there
// is none or it is not a string.
func (r reply) field(i int) string {
	if i < len(r.arr) {
		s, _ := r.arr[i].(string)
		return s
	}
	return ""
}

// int returns the i-th field as an integer.
func (r reply) int(i int) (int64, error) {
	if i < len(r.arr) {
		if v, ok := r.arr[i].(int64); ok {
			return v, nil
		}
	}
	return 0, fmt.Errorf("redisstore: script reply field %d is not an integer", i)
}

// strings returns every field from the i-th on.
func (r reply) strings(from int) []string {
	if from >= len(r.arr) {
		return nil
	}
	out := make([]string, len(r.arr)-from)
	for i := range out {
		out[i] = r.field(from + i)
	}
	return out
}
