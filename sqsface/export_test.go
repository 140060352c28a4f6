package sqsface

// Exported for the black-box tests.

// MD5OfAttributes computes MD5OfMessageAttributes for attributes given as
// name → {data type, string value, binary value}.
func MD5OfAttributes(attrs map[string][3]string) string {
	m := map[string]attrValue{}
	for k, v := range attrs {
		av := attrValue{DataType: v[0]}
		if baseType(v[0]) == "Binary" {
			av.BinaryValue = []byte(v[2])
		} else {
			s := v[1]
			av.StringValue = &s
		}
		m[k] = av
	}
	return md5OfAttributes(m)
}
