package redisstore

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// awaitReplicas waits, if Options.RevocationReplicas asks for it, until
// enough replicas of the master holding key have every write made to key so
// far. WAIT only covers writes made on its own connection, so it runs in a
// pipeline (one connection) after touch.lua, a write to the same key that
// follows the revocation in the replication stream. With tombstone, key is
// a revoked session: touch.lua first checks that this master holds the
// tombstone, so that a failover between the revocation and the WAIT is an
// error (ErrNotReplicated), not an acknowledgement of a lost revocation.
func (s *Store) awaitReplicas(ctx context.Context, key string, tombstone bool) error {
	n := s.opt.RevocationReplicas
	if n <= 0 {
		return nil
	}
	var c *redis.Client
	switch rdb := s.rdb.(type) {
	case *redis.Client:
		c = rdb
	case *redis.ClusterClient:
		var err error
		if c, err = rdb.MasterForKey(ctx, key); err != nil {
			return fmt.Errorf("redisstore: find master for WAIT: %w", err)
		}
	default:
		return fmt.Errorf("redisstore: RevocationReplicas needs a *redis.Client or *redis.ClusterClient, not %T", s.rdb)
	}
	var args []any
	if tombstone {
		args = append(args, fReason)
	}
	touch, wait, err := s.touchAndWait(ctx, c, key, args, n)
	if err != nil {
		return fmt.Errorf("redisstore: WAIT: %w", err)
	}
	if tombstone {
		if ok, err := touch.Int64(); err != nil || ok != 1 {
			return fmt.Errorf("%w: the revocation is not on the current master (a failover since?)", ErrNotReplicated)
		}
	}
	if got, err := wait.Int64(); err != nil || got < int64(n) {
		return fmt.Errorf("%w: %d of %d replicas within %v", ErrNotReplicated, got, n, s.opt.ReplicationTimeout)
	}
	return nil
}
