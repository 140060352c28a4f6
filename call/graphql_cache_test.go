package call

import (
	"strings"
	"testing"
)

func TestPreparedCacheBounds(t *testing.T) {
	c := newPreparedCache()
	p := &prepared{}
	for i := range preparedCacheEntries + 10 {
		c.put(preparedKey{query: "{ a" + strings.Repeat(" ", i) + "}"}, p)
	}
	if n := c.len(); n != preparedCacheEntries {
		t.Errorf("%d entries kept, want %d", n, preparedCacheEntries)
	}
	if c.get(preparedKey{query: "{ a}"}) != nil {
		t.Error("the least recently used entry was kept")
	}
	last := preparedKey{query: "{ a" + strings.Repeat(" ", preparedCacheEntries+9) + "}"}
	if c.get(last) != p {
		t.Error("the newest entry was evicted")
	}
	c.put(preparedKey{query: strings.Repeat("x", preparedCacheMaxQuery+1)}, p)
	if c.len() != preparedCacheEntries {
		t.Error("a query over preparedCacheMaxQuery was kept")
	}
	big := newPreparedCache()
	for i := range 40 {
		big.put(preparedKey{query: strings.Repeat("y", preparedCacheMaxQuery-10) + strings.Repeat("z", i)}, p)
	}
	if big.bytes > preparedCacheBytes {
		t.Errorf("%d bytes of queries kept, over %d", big.bytes, preparedCacheBytes)
	}
}
