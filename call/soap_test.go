package call_test

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	env11 = `<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">%s<soap:Body>%s</soap:Body></soap:Envelope>`
	env12 = `<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope">%s<soap:Body>%s</soap:Body></soap:Envelope>`
	tns   = "urn:switchboard:payments.v1.PaymentService"
)

func envelope(tmpl, header, body string) string {
	return strings.Replace(strings.Replace(tmpl, "%s", header, 1), "%s", body, 1)
}

func soap11(t *testing.T, f *fixture, action, header, body string, hdr ...string) (int, string) {
	t.Helper()
	st, _, out := do(t, "POST", f.base+"/soap/payments.v1.PaymentService", "text/xml; charset=utf-8", envelope(env11, header, body),
		append([]string{"SOAPAction", `"` + action + `"`}, hdr...)...)
	return st, out
}

func soap12(t *testing.T, f *fixture, action, body string, hdr ...string) (int, string) {
	t.Helper()
	st, _, out := do(t, "POST", f.base+"/soap/payments.v1.PaymentService", `application/soap+xml; charset=utf-8; action="`+action+`"`, envelope(env12, "", body), hdr...)
	return st, out
}

func TestSOAP(t *testing.T) {
	f := newFixture(t)
	f.charge(t)
	get := `<GetCharge xmlns="` + tns + `"><id>ch_1</id></GetCharge>`
	st, out := soap11(t, f, tns+"/GetCharge", "", get)
	if st != 200 {
		t.Fatalf("1.1: %d %s", st, out)
	}
	mustContain(t, "1.1", out, `<GetChargeResponse xmlns="`+tns+`">`, "<amountMinor>1250</amountMinor>", "<metadata><key>order</key><value>o-1</value></metadata>",
		"<status>CHARGE_STATUS_SUCCEEDED</status>", "<tags>a</tags><tags>b</tags>", `<attributes>{&#34;gift&#34;:true}</attributes>`)
	st, out = soap12(t, f, tns+"/GetCharge", get)
	if st != 200 || !strings.Contains(out, "http://www.w3.org/2003/05/soap-envelope") {
		t.Fatalf("1.2: %d %s", st, out)
	}
	// A mutation with a map, an enum-free oneof member, a wrapper, a bool.
	charge := `<Charge xmlns="` + tns + `"><amount><currency>EUR</currency><amountMinor>300</amountMinor></amount><idempotencyKey>k1</idempotencyKey>
		<metadata><key>a</key><value>1</value></metadata><bankAccount>DE00</bankAccount><description>x</description></Charge>`
	st, out = soap11(t, f, "", "", charge) // empty SOAPAction: routed by the body
	if st != 200 || !strings.Contains(out, "<bankAccount>DE00</bankAccount>") || !strings.Contains(out, "<replayed>false</replayed>") {
		t.Fatalf("charge: %d %s", st, out)
	}
	_, out = soap11(t, f, "", "", charge)
	mustContain(t, "replay", out, "<replayed>true</replayed>")

	// WSDL: well-formed, both bindings, actions.
	st, _, w := do(t, "GET", f.base+"/soap/payments.v1.PaymentService?wsdl", "", "")
	if st != 200 || xml.Unmarshal([]byte(w), new(struct{})) != nil {
		t.Fatalf("wsdl: %d", st)
	}
	mustContain(t, "wsdl", w, `soapAction="`+tns+`/Charge"`, "<soap12:binding", `<xsd:element name="GetChargeResponse"`, `<xsd:enumeration value="CHARGE_STATUS_REFUNDED"/>`)
	if strings.Contains(w, "WatchCharges") {
		t.Error("wsdl lists a streaming method")
	}
}

func TestSOAPFaults(t *testing.T) {
	f := newFixture(t)
	get := func(id string) string { return `<GetCharge xmlns="` + tns + `"><id>` + id + `</id></GetCharge>` }
	// 1.1: always 500, faultcode Client/Server, detail with the code.
	st, out := soap11(t, f, tns+"/GetCharge", "", get("nope"))
	if st != 500 {
		t.Errorf("1.1 not found: %d", st)
	}
	mustContain(t, "1.1 not found", out, "<faultcode>soap:Client</faultcode>", `<faultstring>charge &#34;nope&#34; not found</faultstring>`, "<sb:code>not_found</sb:code>")
	st, out = soap11(t, f, tns+"/GetCharge", "", get("x"), "X-Test-Fail", "unavailable")
	if st != 500 || !strings.Contains(out, "<faultcode>soap:Server</faultcode>") {
		t.Errorf("1.1 unavailable: %d %s", st, out)
	}
	// 1.2: Sender → 400, Receiver → 500.
	st, out = soap12(t, f, tns+"/GetCharge", get("nope"))
	if st != 400 || !strings.Contains(out, "<soap:Value>soap:Sender</soap:Value>") || !strings.Contains(out, "sb:not_found") {
		t.Errorf("1.2 sender: %d %s", st, out)
	}
	st, out = soap12(t, f, tns+"/GetCharge", get("x"), "X-Test-Fail", "internal")
	if st != 500 || !strings.Contains(out, "<soap:Value>soap:Receiver</soap:Value>") {
		t.Errorf("1.2 receiver: %d %s", st, out)
	}
	for _, tc := range []struct{ name, action, header, body, want string }{
		{"wrong operation for the action", tns + "/Charge", "", get("x"), "does not name the operation"},
		{"unknown operation", "", "", `<Nope xmlns="` + tns + `"/>`, "has no operation Nope"},
		{"unknown element", "", "", `<GetCharge xmlns="` + tns + `"><bogus>1</bogus></GetCharge>`, "unknown element bogus"},
		{"wrong namespace", "", "", `<GetCharge xmlns="urn:other"><id>1</id></GetCharge>`, "not in the service namespace"},
		{"bad value", "", "", `<Charge xmlns="` + tns + `"><amount><amountMinor>abc</amountMinor></amount></Charge>`, "invalid value"},
		{"mustUnderstand", "", `<soap:Header><h:Auth xmlns:h="urn:x" soap:mustUnderstand="1">t</h:Auth></soap:Header>`, get("x"), "<faultcode>soap:MustUnderstand</faultcode>"},
	} {
		st, out := soap11(t, f, tc.action, tc.header, tc.body)
		if st != 500 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %d %s", tc.name, st, out)
		}
	}
	// A header without mustUnderstand is ignored.
	if st, out := soap11(t, f, "", `<soap:Header><h:Trace xmlns:h="urn:x">1</h:Trace></soap:Header>`, get("nope")); st != 500 || !strings.Contains(out, "not_found") {
		t.Errorf("optional header: %d %s", st, out)
	}
	// DOCTYPE, entities (XXE, billion laughs): refused before parsing on.
	for name, doc := range map[string]string{
		"xxe":               `<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>` + envelope(env11, "", `<GetCharge xmlns="`+tns+`"><id>&e;</id></GetCharge>`),
		"billion laughs":    `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>` + envelope(env11, "", `<GetCharge xmlns="`+tns+`"><id>&lol2;</id></GetCharge>`),
		"undeclared entity": envelope(env11, "", `<GetCharge xmlns="`+tns+`"><id>&e;</id></GetCharge>`),
	} {
		st, _, out := do(t, "POST", f.base+"/soap/payments.v1.PaymentService", "text/xml", doc)
		if st != 500 || !strings.Contains(out, "soap:Client") || strings.Contains(out, "root:") {
			t.Errorf("%s: %d %s", name, st, out)
		}
	}
	// SOAP 1.2 content type with a 1.1 envelope: VersionMismatch.
	st, _, out = do(t, "POST", f.base+"/soap/payments.v1.PaymentService", "application/soap+xml", envelope(env11, "", get("x")))
	if st != 400 || !strings.Contains(out, "VersionMismatch") {
		t.Errorf("version mismatch: %d %s", st, out)
	}
}

// TestNodeClients runs real third-party clients from npm: graphql-ws (a
// subscription) with a plain fetch query, and soap (reads the WSDL). They
// live in examples/payments/jsclient; install them there with npm install.
func TestNodeClients(t *testing.T) {
	node, err := exec.LookPath("node")
	dir, _ := filepath.Abs("../examples/payments/jsclient")
	if err != nil {
		t.Skip("node not installed")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "graphql-ws")); err != nil {
		if os.Getenv("SWITCHBOARD_REQUIRE_SERVICES") != "" {
			t.Fatalf("npm clients missing: cd %s && npm install", dir)
		}
		t.Skipf("npm clients not installed: cd %s && npm install", dir)
	}
	f := newFixture(t)
	f.charge(t)
	run := func(script string) map[string]any {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, script, f.base, "ch_1")
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		return v
	}
	g := js(run("graphql.mjs"))
	mustContain(t, "graphql-ws", g, `"id":"ch_1"`, `"amountMinor":"1250"`, `"code":"NOT_FOUND"`, `"type":"created"`)
	s := js(run("soap.mjs"))
	mustContain(t, "soap", s, `"id":"ch_1"`, `"amountMinor":1250`, `"status":500`, `"faultcode":"soap:Client"`, `"code":"not_found"`)
}
