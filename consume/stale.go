package consume

import (
	"container/list"
	"strconv"
	"sync"

	"github.com/switchboard-dev/switchboard/message"
)

// versionOf reads m's per-key version (message.HeaderVersion, an unsigned
// decimal integer). ok is false when the message has no key or no valid
// version: such messages are never dropped as stale.
func versionOf(m *message.Message) (uint64, bool) {
	v := m.Header(message.HeaderVersion)
	if v == "" || m.Key == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// versions remembers the last applied version per key of one registration,
// in memory, bounded: beyond max keys the least recently used key is
// forgotten (a forgotten key accepts the next version it sees).
type versions struct {
	mu  sync.Mutex
	max int
	m   map[string]*list.Element
	lru *list.List
}

type versionEntry struct {
	key string
	v   uint64
}

func newVersions(max int) *versions {
	return &versions{max: max, m: map[string]*list.Element{}, lru: list.New()}
}

// stale reports whether version v of key is not newer than the last applied.
func (s *versions) stale(key string, v uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok {
		return false
	}
	s.lru.MoveToFront(e)
	return v <= e.Value.(*versionEntry).v
}

// applied records that version v of key was handled.
func (s *versions) applied(key string, v uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		ve := e.Value.(*versionEntry)
		if v > ve.v {
			ve.v = v
		}
		s.lru.MoveToFront(e)
		return
	}
	s.m[key] = s.lru.PushFront(&versionEntry{key: key, v: v})
	for s.lru.Len() > s.max {
		old := s.lru.Back()
		s.lru.Remove(old)
		delete(s.m, old.Value.(*versionEntry).key)
	}
}
