package redisstore

import (
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/sessioncache/sessioncache/lua"
)

// Scripts run through EVALSHA and fall back to EVAL on NOSCRIPT, so a script
// cache emptied by a restart or a failover heals itself on first use.
var (
	scriptIssue     = redis.NewScript(lua.Issue)
	scriptRotate    = redis.NewScript(lua.Rotate)
	scriptRevoke    = redis.NewScript(lua.Revoke)
	scriptRevokeAll = redis.NewScript(lua.RevokeAll)
	scriptTouch     = redis.NewScript(lua.Touch)

	allScripts = []*redis.Script{scriptIssue, scriptRotate, scriptRevoke, scriptRevokeAll, scriptTouch}
)

// Reply codes, as documented in each script's header.
const (
	codeUnknown    = 0
	codeOK         = 1
	codeGrace      = 2 // rotate
	codeRetry      = 2 // issue, revoke_all
	codeReused     = 3
	codeRevoked    = 4
	codeExpired    = 5
	codeSuperseded = 6 // rotate
	maxAttempts    = 8 // for scripts that answer codeRetry
	sessionIDLen   = 16
)

// reply is a script's answer: a code and fields.
type reply struct {
	code int64
	arr  []any
}

func parseReply(v any, err error) (reply, error) {
	if err != nil {
		return reply{}, fmt.Errorf("redisstore: %w", err)
	}
	arr, ok := v.([]any)
	if !ok || len(arr) == 0 {
		return reply{}, fmt.Errorf("redisstore: unexpected script reply %T", v)
	}
	code, ok := arr[0].(int64)
	if !ok {
		return reply{}, fmt.Errorf("redisstore: unexpected script reply code %T", arr[0])
	}
	return reply{code: code, arr: arr[1:]}, nil
}

// field returns the i-th field after the code, or "" if there is none.
func (r reply) field(i int) string {
	if i < len(r.arr) {
		s, _ := r.arr[i].(string)
		return s
	}
	return ""
}

// fields returns every field after the code.
func (r reply) fields() []string {
	out := make([]string, len(r.arr))
	for i := range r.arr {
		out[i] = r.field(i)
	}
	return out
}

func parseMS(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("redisstore: bad timestamp in Redis: %w", err)
	}
	return v, nil
}
