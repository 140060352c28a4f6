package sqsface

import (
	"encoding/base64"
	"encoding/xml"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Query protocol lists and maps: "Attribute.1.Name=..&Attribute.1.Value=.."
// and the JSON member they stand for.
type qkind int

const (
	qList       qkind = iota // Name.N = scalar
	qStructList              // Name.N.Member = ...
	qMapNameVal              // Name.N.Name / Name.N.Value
	qMapKeyVal               // Name.N.Key / Name.N.Value
)

var queryLists = map[string]struct {
	json string
	kind qkind
}{
	"Attribute":                      {"Attributes", qMapNameVal},
	"AttributeName":                  {"AttributeNames", qList},
	"MessageSystemAttributeName":     {"MessageSystemAttributeNames", qList},
	"MessageAttributeName":           {"MessageAttributeNames", qList},
	"MessageAttribute":               {"MessageAttributes", qMapNameVal},
	"MessageSystemAttribute":         {"MessageSystemAttributes", qMapNameVal},
	"Tag":                            {"Tags", qMapKeyVal},
	"TagKey":                         {"TagKeys", qList},
	"StringListValue":                {"StringListValues", qList},
	"BinaryListValue":                {"BinaryListValues", qList},
	"SendMessageBatchRequestEntry":   {"Entries", qStructList},
	"DeleteMessageBatchRequestEntry": {"Entries", qStructList},
	"ChangeMessageVisibilityBatchRequestEntry": {"Entries", qStructList},
}

// Query parameters that are integers in the JSON protocol.
var queryInts = map[string]bool{
	"MaxNumberOfMessages": true, "VisibilityTimeout": true, "WaitTimeSeconds": true,
	"DelaySeconds": true, "MaxResults": true,
}

type qlist struct {
	kind  qkind
	items map[int]any
}

// formTree turns Query protocol parameters into the JSON protocol's shape,
// so that one decoder serves both.
func formTree(form url.Values) (map[string]any, *apiError) {
	root := map[string]any{}
	for k, vs := range form {
		if k == "Action" || k == "Version" || len(vs) == 0 {
			continue
		}
		if err := qput(root, strings.Split(k, "."), vs[0], k); err != nil {
			return nil, err
		}
	}
	return qfinish(root).(map[string]any), nil
}

func qput(node map[string]any, parts []string, v, full string) *apiError {
	name := parts[0]
	if len(parts) == 1 {
		if queryInts[name] {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				node[name] = n
				return nil
			}
		}
		node[name] = v
		return nil
	}
	spec, isList := queryLists[name]
	if !isList {
		child, _ := node[name].(map[string]any)
		if child == nil {
			if _, exists := node[name]; exists {
				return errMalformedQuery("parameter %s conflicts with another parameter", full)
			}
			child = map[string]any{}
			node[name] = child
		}
		return qput(child, parts[1:], v, full)
	}
	idx, err := strconv.Atoi(parts[1])
	if err != nil || idx < 1 {
		return errMalformedQuery("parameter %s: %q is not a list index (1, 2, ...)", full, parts[1])
	}
	l, _ := node[spec.json].(*qlist)
	if l == nil {
		l = &qlist{kind: spec.kind, items: map[int]any{}}
		node[spec.json] = l
	}
	if spec.kind == qList {
		if len(parts) != 2 {
			return errMalformedQuery("parameter %s has unexpected members", full)
		}
		l.items[idx] = v
		return nil
	}
	if len(parts) < 3 {
		return errMalformedQuery("parameter %s needs a member name", full)
	}
	el, _ := l.items[idx].(map[string]any)
	if el == nil {
		el = map[string]any{}
		l.items[idx] = el
	}
	return qput(el, parts[2:], v, full)
}

func qfinish(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			x[k] = qfinish(c)
		}
		return x
	case *qlist:
		idx := slices.Sorted(maps.Keys(x.items))
		switch x.kind {
		case qMapNameVal, qMapKeyVal:
			key := "Name"
			if x.kind == qMapKeyVal {
				key = "Key"
			}
			m := map[string]any{}
			for _, i := range idx {
				el, _ := x.items[i].(map[string]any)
				k, _ := el[key].(string)
				m[k] = qfinish(el["Value"])
			}
			return m
		default:
			out := make([]any, 0, len(idx))
			for _, i := range idx {
				out = append(out, qfinish(x.items[i]))
			}
			return out
		}
	}
	return v
}

// attrMap is a string map that the Query protocol writes as repeated
// <X><Name>k</Name><Value>v</Value></X> elements.
type attrMap map[string]string

func (m attrMap) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	return marshalPairs(e, start, "Name", m)
}

// tagMap is attrMap with Key instead of Name.
type tagMap map[string]string

func (m tagMap) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	return marshalPairs(e, start, "Key", m)
}

func marshalPairs(e *xml.Encoder, start xml.StartElement, key string, m map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if err := e.EncodeToken(start); err != nil {
			return err
		}
		if err := e.EncodeElement(k, xml.StartElement{Name: xml.Name{Local: key}}); err != nil {
			return err
		}
		if err := e.EncodeElement(m[k], xml.StartElement{Name: xml.Name{Local: "Value"}}); err != nil {
			return err
		}
		if err := e.EncodeToken(start.End()); err != nil {
			return err
		}
	}
	return nil
}

// attrValue is a message attribute value.
type attrValue struct {
	DataType         string   `json:"DataType"`
	StringValue      *string  `json:"StringValue,omitempty"`
	BinaryValue      []byte   `json:"BinaryValue,omitempty"`
	StringListValues []string `json:"StringListValues,omitempty"`
	BinaryListValues [][]byte `json:"BinaryListValues,omitempty"`
}

// msgAttrMap is a map of message attributes; the Query protocol writes it as
// repeated <MessageAttribute><Name/><Value><StringValue/>...</Value></...>.
type msgAttrMap map[string]attrValue

func (m msgAttrMap) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	type xval struct {
		StringValue *string `xml:"StringValue,omitempty"`
		BinaryValue string  `xml:"BinaryValue,omitempty"`
		DataType    string  `xml:"DataType"`
	}
	type xattr struct {
		Name  string `xml:"Name"`
		Value xval   `xml:"Value"`
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		xv := xval{StringValue: v.StringValue, DataType: v.DataType}
		if v.BinaryValue != nil {
			xv.BinaryValue = base64.StdEncoding.EncodeToString(v.BinaryValue)
		}
		if err := e.EncodeElement(xattr{Name: k, Value: xv}, start); err != nil {
			return err
		}
	}
	return nil
}
