package sqsface

import (
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"maps"
	"slices"
	"strings"
)

// md5Hex is MD5OfMessageBody of body p.
func md5Hex(p []byte) string {
	sum := md5.Sum(p)
	return hex.EncodeToString(sum[:])
}

// md5OfAttributes computes MD5OfMessageAttributes (and
// MD5OfMessageSystemAttributes) the way SQS does: for each attribute in
// order of name, the name, the data type, a transport byte (1 string,
// 2 binary, 3 string list, 4 binary list) and the value, each length-
// prefixed with a 4-byte big-endian length. Empty maps have no digest.
func md5OfAttributes(attrs map[string]attrValue) string {
	if len(attrs) == 0 {
		return ""
	}
	h := md5.New()
	put := func(b []byte) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	for _, name := range slices.Sorted(maps.Keys(attrs)) {
		v := attrs[name]
		put([]byte(name))
		put([]byte(v.DataType))
		switch {
		case v.StringValue != nil:
			h.Write([]byte{1})
			put([]byte(*v.StringValue))
		case v.BinaryValue != nil:
			h.Write([]byte{2})
			put(v.BinaryValue)
		case len(v.StringListValues) > 0:
			h.Write([]byte{3})
			for _, s := range v.StringListValues {
				put([]byte(s))
			}
		case len(v.BinaryListValues) > 0:
			h.Write([]byte{4})
			for _, b := range v.BinaryListValues {
				put(b)
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// baseType is "String", "Number" or "Binary" for a data type such as
// "Number.float".
func baseType(dataType string) string {
	t, _, _ := strings.Cut(dataType, ".")
	return t
}
