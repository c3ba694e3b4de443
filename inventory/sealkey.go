package inventory

import (
	"bytes"
	"context"
	"errors"

	"github.com/metalhall/metalhall/inventory/kv"
)

var keySealKeyID = []byte("seal_key_id")

// ErrSealKeyMismatch is returned by CheckSealKey when the store's secrets
// were sealed with another key than the one offered.
var ErrSealKeyMismatch = errors.New("the sealing key is not the one this inventory's secrets were sealed with")

// CheckSealKey checks that id identifies the key the store's secrets are
// sealed with, recording it if the store has none yet. id is derived from
// the key (never the key itself: the store must not hold what opens its
// secrets).
func (s *Store) CheckSealKey(ctx context.Context, id []byte) error {
	if len(id) == 0 {
		return invalid("seal key id", "empty")
	}
	var known []byte
	if err := s.view(func(tx kv.Tx) error {
		known = bytes.Clone(bkt(tx, bMeta).Get(keySealKeyID))
		return nil
	}); err != nil {
		return err
	}
	if known == nil {
		// The first key offered is the store's: recorded once, compared
		// again inside the write in case another instance raced us.
		err := s.update(func(tx kv.Tx) error {
			meta := bkt(tx, bMeta)
			if v := meta.Get(keySealKeyID); v != nil {
				known = bytes.Clone(v)
				return nil
			}
			known = id
			return meta.Put(keySealKeyID, id)
		})
		if err != nil {
			return err
		}
	}
	if !bytes.Equal(known, id) {
		return ErrSealKeyMismatch
	}
	return nil
}
