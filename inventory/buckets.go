package inventory

import "bytes"

// Buckets lists every bucket of the inventory's schema, for a copy of
// the whole store to another engine (kv.Copy): the schema stays here,
// the copy stays ignorant of it.
func Buckets() [][]byte {
	all := append(append([][]byte(nil), allBuckets...), extraBuckets...)
	for i := range all {
		all[i] = bytes.Clone(all[i])
	}
	return all
}
