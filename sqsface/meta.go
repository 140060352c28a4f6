package sqsface

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// queueMeta is what the face keeps about a queue beyond its topic: the
// attributes as set, tags and times. It is stored as JSON in
// Config.Dir/queues.json.
type queueMeta struct {
	Name       string            `json:"name"`
	Created    int64             `json:"created"`  // unix seconds
	Modified   int64             `json:"modified"` // unix seconds
	Attributes map[string]string `json:"attributes"`
	Tags       map[string]string `json:"tags,omitempty"`
}

type metaStore struct {
	mu   sync.Mutex
	path string // "" = memory only
	init []queueMeta
}

func openMetaStore(dir string) (*metaStore, error) {
	ms := &metaStore{}
	if dir == "" {
		return ms, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sqsface: metadata directory: %w", err)
	}
	ms.path = filepath.Join(dir, "queues.json")
	data, err := os.ReadFile(ms.path)
	if errors.Is(err, os.ErrNotExist) {
		return ms, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sqsface: read queue metadata: %w", err)
	}
	var file struct {
		Version int         `json:"version"`
		Queues  []queueMeta `json:"queues"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		return nil, fmt.Errorf("sqsface: queue metadata %s is corrupt (%v); restore it from a backup or remove it to forget the queues' attributes", ms.path, err)
	}
	ms.init = file.Queues
	return ms, nil
}

func (ms *metaStore) load() []queueMeta { return ms.init }

// save writes every queue's metadata atomically (temporary file, fsync,
// rename).
func (ms *metaStore) save(all []queueMeta) error {
	if ms.path == "" {
		return nil
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	data, err := json.MarshalIndent(struct {
		Version int         `json:"version"`
		Queues  []queueMeta `json:"queues"`
	}{1, all}, "", "  ")
	if err != nil {
		return err
	}
	tmp := ms.path + ".tmp"
	fh, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := fh.Write(data); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, ms.path)
}
