package redisinbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboard-dev/switchboard/consume"
)

// Versions is a consume.VersionStore in Redis: one string key per (group,
// message key) holding the highest version applied, in decimal, with an
// expiry (PX) renewed each time the version goes up. Record is a Lua script,
// so the comparison and the write are one atomic step for every process
// using the same Redis. Records expire by themselves (no sweeping); with
// Redis persistence off, a Redis restart forgets them. Safe for concurrent
// use.
type Versions struct {
	c      redis.UniversalClient
	prefix string
}

var _ consume.VersionStore = (*Versions)(nil)

// NewVersions returns a version store using c, with keys
// "<prefix><len(group)>:<group>:<key>" (the length keeps groups that
// contain ':' apart); an empty prefix means "sb:versions:".
func NewVersions(c redis.UniversalClient, prefix string) *Versions {
	if prefix == "" {
		prefix = "sb:versions:"
	}
	return &Versions{c: c, prefix: prefix}
}

func (s *Versions) key(group, k string) string {
	return s.prefix + strconv.Itoa(len(group)) + ":" + group + ":" + k
}

// recordScript sets KEYS[1] to ARGV[1] for ARGV[2] ms unless it holds a
// version at or above it; 1 when it did. Versions are decimal strings
// without leading zeros: a longer one is larger, and equal lengths are
// compared in two parts of at most 10 digits, which Lua numbers (doubles)
// hold exactly, unlike whole versions above 2^53.
var recordScript = redis.NewScript(`
local function ge(a, b)
  if #a ~= #b then return #a > #b end
  local ah, bh = tonumber(string.sub(a, 1, -11)) or 0, tonumber(string.sub(b, 1, -11)) or 0
  if ah ~= bh then return ah > bh end
  return tonumber(string.sub(a, -10)) >= tonumber(string.sub(b, -10))
end
local cur = redis.call('GET', KEYS[1])
if cur and ge(cur, ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

// Version implements consume.VersionStore.
func (s *Versions) Version(ctx context.Context, group, k string) (uint64, bool, error) {
	raw, err := s.c.Get(ctx, s.key(group, k)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("redisinbox: version %s/%s: %w", group, k, err)
	}
	v, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("redisinbox: version %s/%s: stored value %q: %w", group, k, raw, err)
	}
	return v, true, nil
}

// Record implements consume.VersionStore.
func (s *Versions) Record(ctx context.Context, group, k string, v uint64, ttl time.Duration) (bool, error) {
	n, err := recordScript.Run(ctx, s.c, []string{s.key(group, k)}, strconv.FormatUint(v, 10), ms(ttl)).Int()
	if err != nil {
		return false, fmt.Errorf("redisinbox: record version %s/%s: %w", group, k, err)
	}
	return n == 1, nil
}
