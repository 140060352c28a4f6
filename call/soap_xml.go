package call

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// element is a parsed XML element.
type element struct {
	name     xml.Name
	attrs    []xml.Attr
	children []*element
	text     strings.Builder
}

// errDTD is the fault for any DTD content.
var errDTD = clientFault("XML with a DOCTYPE or entity declaration is refused (no DTDs: prevents XXE and entity expansion)")

// parseXML parses a document strictly and without DTDs: any directive
// (<!DOCTYPE, <!ENTITY) is refused, unknown entities are errors (only the
// five predefined ones and character references are known), nesting is
// bounded.
func parseXML(data []byte) (*element, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	var stack []*element
	var root *element
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, clientFault("malformed XML: %v", err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return nil, errDTD
		case xml.ProcInst:
			if t.Target != "xml" {
				return nil, clientFault("XML processing instruction <?%s?> is refused", t.Target)
			}
		case xml.StartElement:
			if len(stack) >= maxXMLDepth {
				return nil, clientFault("XML nested deeper than %d elements", maxXMLDepth)
			}
			e := &element{name: t.Name, attrs: t.Attr}
			if len(stack) == 0 {
				if root != nil {
					return nil, clientFault("malformed XML: more than one root element")
				}
				root = e
			} else {
				p := stack[len(stack)-1]
				p.children = append(p.children, e)
			}
			stack = append(stack, e)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text.Write(t)
			}
		}
	}
	if root == nil {
		return nil, clientFault("malformed XML: no root element")
	}
	return root, nil
}

func (e *element) nilled() bool {
	for _, a := range e.attrs {
		if a.Name.Space == xsiNS && a.Name.Local == "nil" && (a.Value == "true" || a.Value == "1") {
			return true
		}
	}
	return false
}

// xmlToValue turns the children of e into the JSON-shaped value of md (maps
// as entry lists), refusing unknown elements.
func xmlToValue(e *element, md protoreflect.MessageDescriptor, tns string) (map[string]any, error) {
	out := map[string]any{}
	for _, c := range e.children {
		if c.name.Space != tns && c.name.Space != "" {
			return nil, clientFault("element {%s}%s in %s is not in the namespace %s", c.name.Space, c.name.Local, e.name.Local, tns)
		}
		fd := md.Fields().ByJSONName(c.name.Local)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(c.name.Local))
		}
		if fd == nil {
			return nil, clientFault("unknown element %s in %s (%s); see the WSDL", c.name.Local, e.name.Local, md.FullName())
		}
		v, err := xmlValue(c, fd, tns)
		if err != nil {
			return nil, err
		}
		key := fd.JSONName()
		if fd.IsList() || fd.IsMap() {
			l, _ := out[key].([]any)
			out[key] = append(l, v)
			continue
		}
		if _, dup := out[key]; dup {
			return nil, clientFault("element %s appears twice in %s", c.name.Local, e.name.Local)
		}
		out[key] = v
	}
	return out, nil
}

// xmlValue is the JSON-shaped value of one element for fd.
func xmlValue(c *element, fd protoreflect.FieldDescriptor, tns string) (any, error) {
	if c.nilled() {
		return nil, nil
	}
	if fd.IsMap() {
		entry := map[string]any{}
		for _, kc := range c.children {
			var f protoreflect.FieldDescriptor
			switch kc.name.Local {
			case "key":
				f = fd.MapKey()
			case "value":
				f = fd.MapValue()
			default:
				return nil, clientFault("unknown element %s in map entry %s; entries hold key and value", kc.name.Local, c.name.Local)
			}
			v, err := xmlValue(kc, f, tns)
			if err != nil {
				return nil, err
			}
			entry[kc.name.Local] = v
		}
		return entry, nil
	}
	text := strings.TrimSpace(c.text.String())
	if md := fd.Message(); md != nil {
		switch md.FullName() {
		case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any":
			var v any
			d := json.NewDecoder(strings.NewReader(text))
			d.UseNumber()
			if err := d.Decode(&v); err != nil {
				return nil, clientFault("element %s holds JSON (%s): %v", c.name.Local, md.FullName(), err)
			}
			return v, nil
		case "google.protobuf.BoolValue":
			return parseBool(c.name.Local, text)
		}
		if isWKT(md) {
			return text, nil
		}
		return xmlToValue(c, md, tns)
	}
	if len(c.children) > 0 {
		return nil, clientFault("element %s must hold text, not elements", c.name.Local)
	}
	if fd.Kind() == protoreflect.BoolKind {
		return parseBool(c.name.Local, text)
	}
	return text, nil // protojson parses numbers, enums and base64 from strings
}

func parseBool(name, s string) (any, error) {
	switch s {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return nil, clientFault("element %s must be true or false, not %q", name, s)
}

// writeFields writes the JSON-shaped value of md as child elements (in the
// default namespace), in field order.
func writeFields(buf *bytes.Buffer, md protoreflect.MessageDescriptor, v map[string]any) {
	for i := 0; i < md.Fields().Len(); i++ {
		fd := md.Fields().Get(i)
		val, ok := v[fd.JSONName()]
		if !ok || val == nil {
			continue
		}
		if l, ok := val.([]any); ok && (fd.IsList() || fd.IsMap()) {
			for _, e := range l {
				writeElement(buf, fd, e, fd.IsMap())
			}
			continue
		}
		writeElement(buf, fd, val, false)
	}
}

func writeElement(buf *bytes.Buffer, fd protoreflect.FieldDescriptor, v any, entry bool) {
	name := fd.JSONName()
	buf.WriteString("<" + name + ">")
	switch {
	case entry:
		m, _ := v.(map[string]any)
		for _, k := range []string{"key", "value"} {
			f := fd.MapKey()
			if k == "value" {
				f = fd.MapValue()
			}
			buf.WriteString("<" + k + ">")
			writeScalarOrMessage(buf, f, m[k])
			buf.WriteString("</" + k + ">")
		}
	default:
		writeScalarOrMessage(buf, fd, v)
	}
	buf.WriteString("</" + name + ">")
}

func writeScalarOrMessage(buf *bytes.Buffer, fd protoreflect.FieldDescriptor, v any) {
	if md := fd.Message(); md != nil && !isWKT(md) {
		if m, ok := v.(map[string]any); ok {
			writeFields(buf, md, m)
		}
		return
	}
	switch t := v.(type) {
	case string:
		_ = xml.EscapeText(buf, []byte(t))
	case bool:
		buf.WriteString(strconv.FormatBool(t))
	case float64:
		buf.WriteString(strconv.FormatFloat(t, 'g', -1, 64))
	case nil:
	default:
		data, _ := json.Marshal(t) // Struct, Value, ListValue, Any: JSON text
		_ = xml.EscapeText(buf, data)
	}
}

// xsdType is the XML Schema type of one value of fd.
func xsdType(fd protoreflect.FieldDescriptor) string {
	if md := fd.Message(); md != nil {
		switch md.FullName() {
		case "google.protobuf.Timestamp":
			return "xsd:dateTime"
		case "google.protobuf.BoolValue":
			return "xsd:boolean"
		case "google.protobuf.Int32Value":
			return "xsd:int"
		case "google.protobuf.UInt32Value":
			return "xsd:unsignedInt"
		case "google.protobuf.Int64Value":
			return "xsd:long"
		case "google.protobuf.UInt64Value":
			return "xsd:unsignedLong"
		case "google.protobuf.DoubleValue":
			return "xsd:double"
		case "google.protobuf.FloatValue":
			return "xsd:float"
		case "google.protobuf.BytesValue":
			return "xsd:base64Binary"
		}
		if isWKT(md) {
			return "xsd:string" // Duration "1.5s", FieldMask, and JSON text for Struct/Value/ListValue/Any
		}
		return "tns:" + typeName(md.FullName())
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return "xsd:boolean"
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return "xsd:int"
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return "xsd:unsignedInt"
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return "xsd:long"
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return "xsd:unsignedLong"
	case protoreflect.FloatKind:
		return "xsd:float"
	case protoreflect.DoubleKind:
		return "xsd:double"
	case protoreflect.BytesKind:
		return "xsd:base64Binary"
	case protoreflect.EnumKind:
		return "tns:" + typeName(fd.Enum().FullName())
	}
	return "xsd:string"
}

// wsdl generates the WSDL 1.1 of a service, with SOAP 1.1 and 1.2 bindings.
func wsdl(svc *service, location string) []byte {
	tns := serviceNS(svc)
	name := string(svc.desc.Name())
	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>
<definitions name="%[1]s" targetNamespace="%[2]s" xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:tns="%[2]s" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/">
<documentation>Generated by Switchboard from the protobuf service %[3]s.</documentation>
<types>
<xsd:schema targetNamespace="%[2]s" elementFormDefault="qualified">
`, name, tns, svc.desc.FullName())
	msgs := map[protoreflect.FullName]protoreflect.MessageDescriptor{}
	enums := map[protoreflect.FullName]protoreflect.EnumDescriptor{}
	var ops []*method
	for _, m := range svc.methods {
		if m.streaming() {
			continue
		}
		ops = append(ops, m)
		collectTypes(m.desc.Input(), msgs, enums)
		collectTypes(m.desc.Output(), msgs, enums)
		fmt.Fprintf(&b, "<xsd:element name=\"%s\" type=\"tns:%s\"/>\n<xsd:element name=\"%sResponse\" type=\"tns:%s\"/>\n",
			m.desc.Name(), typeName(m.desc.Input().FullName()), m.desc.Name(), typeName(m.desc.Output().FullName()))
	}
	for _, n := range sortedKeys(msgs) {
		md := msgs[n]
		fmt.Fprintf(&b, "<xsd:complexType name=\"%s\"><xsd:sequence>", typeName(n))
		for i := 0; i < md.Fields().Len(); i++ {
			fd := md.Fields().Get(i)
			typ, occurs := xsdType(fd), ""
			if fd.IsMap() {
				typ = "tns:" + typeName(fd.Message().FullName())
			}
			if fd.IsList() || fd.IsMap() {
				occurs = ` maxOccurs="unbounded"`
			}
			fmt.Fprintf(&b, `<xsd:element name="%s" type="%s" minOccurs="0"%s/>`, fd.JSONName(), typ, occurs)
		}
		b.WriteString("</xsd:sequence></xsd:complexType>\n")
	}
	for _, n := range sortedKeys(enums) {
		ed := enums[n]
		fmt.Fprintf(&b, "<xsd:simpleType name=\"%s\"><xsd:restriction base=\"xsd:string\">", typeName(n))
		for i := 0; i < ed.Values().Len(); i++ {
			fmt.Fprintf(&b, `<xsd:enumeration value="%s"/>`, ed.Values().Get(i).Name())
		}
		b.WriteString("</xsd:restriction></xsd:simpleType>\n")
	}
	b.WriteString("</xsd:schema>\n</types>\n")
	for _, m := range ops {
		fmt.Fprintf(&b, "<message name=\"%[1]sInput\"><part name=\"parameters\" element=\"tns:%[1]s\"/></message>\n<message name=\"%[1]sOutput\"><part name=\"parameters\" element=\"tns:%[1]sResponse\"/></message>\n", m.desc.Name())
	}
	fmt.Fprintf(&b, "<portType name=\"%sPortType\">\n", name)
	for _, m := range ops {
		fmt.Fprintf(&b, "<operation name=\"%[1]s\"><input message=\"tns:%[1]sInput\"/><output message=\"tns:%[1]sOutput\"/></operation>\n", m.desc.Name())
	}
	b.WriteString("</portType>\n")
	for _, v := range []struct{ suffix, prefix, transport string }{
		{"Soap11", "soap", "http://schemas.xmlsoap.org/soap/http"},
		{"Soap12", "soap12", "http://schemas.xmlsoap.org/soap/http"},
	} {
		fmt.Fprintf(&b, "<binding name=\"%[1]s%[2]s\" type=\"tns:%[1]sPortType\"><%[3]s:binding style=\"document\" transport=\"%[4]s\"/>\n", name, v.suffix, v.prefix, v.transport)
		for _, m := range ops {
			fmt.Fprintf(&b, "<operation name=\"%[1]s\"><%[2]s:operation soapAction=\"%[3]s/%[1]s\" style=\"document\"/><input><%[2]s:body use=\"literal\"/></input><output><%[2]s:body use=\"literal\"/></output></operation>\n",
				m.desc.Name(), v.prefix, tns)
		}
		b.WriteString("</binding>\n")
	}
	fmt.Fprintf(&b, "<service name=\"%[1]s\"><port name=\"%[1]sSoap11\" binding=\"tns:%[1]sSoap11\"><soap:address location=\"%[2]s\"/></port><port name=\"%[1]sSoap12\" binding=\"tns:%[1]sSoap12\"><soap12:address location=\"%[2]s\"/></port></service>\n</definitions>\n",
		name, xmlEscape(location))
	return b.Bytes()
}

func collectTypes(md protoreflect.MessageDescriptor, msgs map[protoreflect.FullName]protoreflect.MessageDescriptor, enums map[protoreflect.FullName]protoreflect.EnumDescriptor) {
	if _, ok := msgs[md.FullName()]; ok || isWKT(md) {
		return
	}
	msgs[md.FullName()] = md
	for i := 0; i < md.Fields().Len(); i++ {
		fd := md.Fields().Get(i)
		if fd.Message() != nil {
			collectTypes(fd.Message(), msgs, enums)
		}
		if fd.Enum() != nil {
			enums[fd.Enum().FullName()] = fd.Enum()
		}
	}
}

func sortedKeys[V any](m map[protoreflect.FullName]V) []protoreflect.FullName {
	out := make([]protoreflect.FullName, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
