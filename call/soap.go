package call

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// SOAP is served at /soap/{package}.{Service}: document/literal wrapped,
// SOAP 1.1 (text/xml, SOAPAction header) and SOAP 1.2
// (application/soap+xml; action=...), with the WSDL at ?wsdl. Each unary
// method is an operation; the body holds one element named after the method
// (in the service's namespace, urn:switchboard:{package}.{Service}) whose
// children are the request fields by JSON name; the answer is
// {Method}Response holding the response fields.
//
// Requests are parsed without DTDs: a DOCTYPE or entity declaration is
// refused (no XXE, no entity expansion), as is a header block with
// mustUnderstand set (Switchboard understands no SOAP headers).

const (
	soap11NS = "http://schemas.xmlsoap.org/soap/envelope/"
	soap12NS = "http://www.w3.org/2003/05/soap-envelope"
	errorNS  = "urn:switchboard:error"
	xsiNS    = "http://www.w3.org/2001/XMLSchema-instance"
)

// maxXMLDepth bounds element nesting of a SOAP request.
const maxXMLDepth = 64

func serviceNS(svc *service) string { return "urn:switchboard:" + string(svc.desc.FullName()) }

type soapHandler struct{ s *Server }

// soapFault is a fault to answer.
type soapFault struct {
	code   connect.Code
	sender bool   // Client (1.1) / Sender (1.2); else Server / Receiver
	soap   string // overrides: "MustUnderstand", "VersionMismatch"
	msg    string
}

func clientFault(format string, args ...any) *soapFault {
	return &soapFault{code: connect.CodeInvalidArgument, sender: true, msg: fmt.Sprintf(format, args...)}
}

func faultOf(err error) *soapFault {
	var f *soapFault
	if errors.As(err, &f) {
		return f
	}
	code := CodeOf(err)
	return &soapFault{code: code, sender: MappingOf(code).SOAP12 == "Sender", msg: messageOf(err)}
}

func (f *soapFault) Error() string { return f.msg }

func (h *soapHandler) service(r *http.Request) *service {
	name := strings.TrimPrefix(r.URL.Path, "/soap/")
	for _, svc := range h.s.services {
		if string(svc.desc.FullName()) == name {
			return svc
		}
	}
	return nil
}

func (h *soapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	svc := h.service(r)
	if svc == nil {
		WriteStatus(w, http.StatusNotFound, connect.CodeNotFound, fmt.Sprintf("no SOAP service at %s; services are at /soap/{package}.{Service}", r.URL.Path))
		return
	}
	if r.Method == http.MethodGet {
		if _, ok := r.URL.Query()["wsdl"]; ok {
			w.Header().Set("Content-Type", "text/xml; charset=utf-8")
			_, _ = w.Write(wsdl(svc, soapLocation(r)))
			return
		}
		WriteStatus(w, http.StatusMethodNotAllowed, connect.CodeInvalidArgument, "GET serves only the WSDL (?wsdl); calls are POSTs")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		WriteStatus(w, http.StatusMethodNotAllowed, connect.CodeInvalidArgument, "use POST")
		return
	}
	ver12, action := soapVersion(r)
	body, err := h.s.readBody(w, r)
	switch {
	case CodeOf(err) == connect.CodeResourceExhausted:
		// Over WithMaxBodyBytes: the error table's fault for
		// ResourceExhausted (Server / Receiver, HTTP 500), not 413: SOAP
		// toolkits read a fault only from a 500 (or a SOAP 1.2 Sender's
		// 400), as WS-I Basic Profile R1126 has it.
		writeFault(w, ver12, faultOf(err))
		return
	case err != nil:
		writeFault(w, ver12, &soapFault{code: connect.CodeInvalidArgument, sender: true, msg: "request body: " + err.Error()})
		return
	}
	res, err := h.call(r, svc, ver12, action, body)
	if err != nil {
		writeFault(w, ver12, faultOf(err))
		return
	}
	writeEnvelope(w, ver12, http.StatusOK, res)
}

// soapVersion reads the SOAP version and action from the headers.
func soapVersion(r *http.Request) (ver12 bool, action string) {
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/soap+xml" {
		return true, params["action"]
	}
	return false, strings.Trim(r.Header.Get("SOAPAction"), `"`)
}

func soapLocation(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.Path
}

func (h *soapHandler) call(r *http.Request, svc *service, ver12 bool, action string, body []byte) ([]byte, error) {
	root, err := parseXML(body)
	if err != nil {
		return nil, err
	}
	envNS := soap11NS
	if ver12 {
		envNS = soap12NS
	}
	if root.name.Local != "Envelope" || (root.name.Space != soap11NS && root.name.Space != soap12NS) {
		return nil, &soapFault{code: connect.CodeInvalidArgument, sender: true, soap: "VersionMismatch",
			msg: fmt.Sprintf("the root element is {%s}%s, not a SOAP Envelope", root.name.Space, root.name.Local)}
	}
	if root.name.Space != envNS {
		return nil, &soapFault{code: connect.CodeInvalidArgument, sender: true, soap: "VersionMismatch",
			msg: fmt.Sprintf("the envelope namespace %s does not match the content type (SOAP 1.1 is text/xml, SOAP 1.2 application/soap+xml)", root.name.Space)}
	}
	var bodyEl *element
	for _, c := range root.children {
		switch {
		case c.name.Space == envNS && c.name.Local == "Header":
			if err := checkHeaders(c, envNS, ver12); err != nil {
				return nil, err
			}
		case c.name.Space == envNS && c.name.Local == "Body":
			bodyEl = c
		}
	}
	if bodyEl == nil || len(bodyEl.children) != 1 {
		return nil, clientFault("the SOAP Body must hold exactly one operation element")
	}
	op := bodyEl.children[0]
	tns := serviceNS(svc)
	if op.name.Space != tns {
		return nil, clientFault("the operation element {%s}%s is not in the service namespace %s", op.name.Space, op.name.Local, tns)
	}
	m := findOperation(svc, op.name.Local)
	if m == nil {
		return nil, &soapFault{code: connect.CodeUnimplemented, sender: true, msg: fmt.Sprintf("%s has no operation %s; see ?wsdl", svc.desc.FullName(), op.name.Local)}
	}
	if action != "" {
		am := findOperation(svc, strings.TrimPrefix(action, tns+"/"))
		if am != m {
			return nil, clientFault("the SOAP action %q does not name the operation in the Body (%s); send action %q", action, op.name.Local, tns+"/"+op.name.Local)
		}
	}
	val, err := xmlToValue(op, m.desc.Input(), tns)
	if err != nil {
		return nil, err
	}
	req, err := newMessage(m.in, val)
	if err != nil {
		return nil, err
	}
	res, err := svc.invoker.unary(r.Context(), m.desc, req, forwarded(r.Header))
	if err != nil {
		return nil, err
	}
	out, err := messageValue(res)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, `<%sResponse xmlns="%s">`, m.desc.Name(), tns)
	writeFields(&buf, m.desc.Output(), out)
	fmt.Fprintf(&buf, `</%sResponse>`, m.desc.Name())
	return buf.Bytes(), nil
}

func findOperation(svc *service, name string) *method {
	for _, m := range svc.methods {
		if string(m.desc.Name()) == name && !m.streaming() {
			return m
		}
	}
	return nil
}

// checkHeaders refuses header blocks that must be understood: Switchboard
// processes no SOAP header.
func checkHeaders(hdr *element, envNS string, ver12 bool) error {
	for _, b := range hdr.children {
		mu, role := "", ""
		for _, a := range b.attrs {
			if a.Name.Space != envNS {
				continue
			}
			switch a.Name.Local {
			case "mustUnderstand":
				mu = a.Value
			case "actor", "role":
				role = a.Value
			}
		}
		if mu != "1" && mu != "true" {
			continue
		}
		if role != "" && role != soap11NS+"actor/next" && role != soap12NS+"/role/next" && role != soap12NS+"/role/ultimateReceiver" {
			continue // targeted at another node
		}
		_ = ver12
		return &soapFault{code: connect.CodeInvalidArgument, sender: false, soap: "MustUnderstand",
			msg: fmt.Sprintf("header block {%s}%s is marked mustUnderstand, and this service understands no SOAP headers", b.name.Space, b.name.Local)}
	}
	return nil
}

func writeEnvelope(w http.ResponseWriter, ver12 bool, status int, body []byte) {
	ns, ct := soap11NS, "text/xml; charset=utf-8"
	if ver12 {
		ns, ct = soap12NS, "application/soap+xml; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<soap:Envelope xmlns:soap="%s"><soap:Body>%s</soap:Body></soap:Envelope>`, ns, body)
}

// writeFault answers a fault: SOAP 1.1 always with HTTP 500; SOAP 1.2 with
// 400 for Sender faults and 500 otherwise.
func writeFault(w http.ResponseWriter, ver12 bool, f *soapFault) {
	var buf bytes.Buffer
	detail := fmt.Sprintf(`<sb:error xmlns:sb="%s"><sb:code>%s</sb:code><sb:message>%s</sb:message></sb:error>`,
		errorNS, codeName(f.code), xmlEscape(f.msg))
	if !ver12 {
		code := "Server"
		if f.sender {
			code = "Client"
		}
		if f.soap != "" {
			code = f.soap
		}
		fmt.Fprintf(&buf, `<soap:Fault><faultcode>soap:%s</faultcode><faultstring>%s</faultstring><detail>%s</detail></soap:Fault>`,
			code, xmlEscape(f.msg), detail)
		writeEnvelope(w, false, http.StatusInternalServerError, buf.Bytes())
		return
	}
	code, status := "Receiver", http.StatusInternalServerError
	if f.sender {
		code, status = "Sender", http.StatusBadRequest
	}
	if f.soap != "" {
		code = f.soap
		status = http.StatusInternalServerError
		if f.soap == "VersionMismatch" {
			status = http.StatusBadRequest
		}
	}
	fmt.Fprintf(&buf, `<soap:Fault><soap:Code><soap:Value>soap:%s</soap:Value><soap:Subcode><soap:Value xmlns:sb="%s">sb:%s</soap:Value></soap:Subcode></soap:Code><soap:Reason><soap:Text xml:lang="en">%s</soap:Text></soap:Reason><soap:Detail>%s</soap:Detail></soap:Fault>`,
		code, errorNS, codeName(f.code), xmlEscape(f.msg), detail)
	writeEnvelope(w, true, status, buf.Bytes())
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
