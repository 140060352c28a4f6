package call

import (
	"container/list"
	"sync"
)

// Parsing, validating and measuring a GraphQL document costs several times
// more than executing a small query, and clients send the same few query
// strings over and over (variables carry what changes). prepare therefore
// keeps the operations it accepted, keyed by query string and operation
// name: the schema and limits are fixed for the server's lifetime, so an
// operation valid once is valid again. graphql-go's executor only reads the
// document, so one document serves concurrent requests. Only accepted
// operations are kept: a refused one costs its sender the full price each
// time, and cannot push useful entries out.

const (
	// preparedCacheEntries bounds the number of kept operations.
	preparedCacheEntries = 512
	// preparedCacheBytes bounds the summed length of their query strings
	// (the parsed documents are proportional to it).
	preparedCacheBytes = 1 << 20
	// preparedCacheMaxQuery is the longest query string that is kept.
	preparedCacheMaxQuery = 64 << 10
)

// preparedKey identifies an operation: a document and the operation chosen
// from it.
type preparedKey struct{ query, operationName string }

// preparedCache is a least-recently-used cache of prepared operations. It
// is safe for concurrent use.
type preparedCache struct {
	mu    sync.Mutex
	order *list.List // of *preparedEntry, most recently used first
	byKey map[preparedKey]*list.Element
	bytes int // summed len(query) of the entries
}

type preparedEntry struct {
	key preparedKey
	p   *prepared
}

func newPreparedCache() *preparedCache {
	return &preparedCache{order: list.New(), byKey: map[preparedKey]*list.Element{}}
}

// get returns the operation kept for k, or nil.
func (c *preparedCache) get(k preparedKey) *prepared {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[k]
	if !ok {
		return nil
	}
	c.order.MoveToFront(e)
	return e.Value.(*preparedEntry).p
}

// put keeps p for k, evicting the least recently used entries over the
// bounds. Query strings over preparedCacheMaxQuery are not kept.
func (c *preparedCache) put(k preparedKey, p *prepared) {
	size := len(k.query) + len(k.operationName)
	if size > preparedCacheMaxQuery {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[k]; ok { // prepared concurrently
		c.order.MoveToFront(e)
		return
	}
	c.byKey[k] = c.order.PushFront(&preparedEntry{key: k, p: p})
	c.bytes += size
	for c.order.Len() > preparedCacheEntries || c.bytes > preparedCacheBytes {
		old := c.order.Remove(c.order.Back()).(*preparedEntry)
		delete(c.byKey, old.key)
		c.bytes -= len(old.key.query) + len(old.key.operationName)
	}
}

// len returns the number of kept operations (for tests).
func (c *preparedCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
