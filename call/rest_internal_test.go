package call

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	sbv1 "github.com/switchboard-dev/switchboard/api/switchboard/v1"
	paymentsv1 "github.com/switchboard-dev/switchboard/examples/payments/gen/payments/v1"
)

// fastRoutes lists the fast path's routes of services as "VERB /path".
func fastRoutes(sds ...protoreflect.ServiceDescriptor) []string {
	var svcs []*service
	for _, sd := range sds {
		svc := &service{desc: sd}
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			svc.methods = append(svc.methods, &method{svc: svc, desc: md, in: messageType(md.Input()), out: messageType(md.Output())})
		}
		svcs = append(svcs, svc)
	}
	var out []string
	for verb, rs := range buildRESTRoutes(svcs) {
		for _, rt := range rs {
			p := ""
			for _, s := range rt.segs {
				if s == "" {
					s = "*"
				}
				p += "/" + s
			}
			out = append(out, verb+" "+p+" "+string(rt.m.desc.Name()))
		}
	}
	slices.Sort(out)
	return out
}

func TestRESTFastRoutes(t *testing.T) {
	got := fastRoutes(paymentsv1.File_payments_v1_payments_proto.Services().Get(0))
	want := []string{"GET /v1/charges/* GetCharge", "POST /v1/charges Charge"}
	if !slices.Equal(got, want) {
		t.Errorf("payments: %q; want %q", got, want)
	}
	// The hub's API: routes with a :verb stay with vanguard; the others
	// share their segments only with routes of other HTTP methods.
	got = fastRoutes(sbv1.File_switchboard_v1_switchboard_proto.Services().Get(0))
	for _, r := range []string{
		"POST /v1/topics/*/messages Publish",
		"GET /v1/topics ListTopics", "POST /v1/topics CreateTopic",
		"GET /v1/topics/* DescribeTopic", "DELETE /v1/topics/* DeleteTopic",
		"GET /v1/groups/* DescribeGroup", "DELETE /v1/groups/* DeleteGroup",
	} {
		if !slices.Contains(got, r) {
			t.Errorf("hub: %q is not a fast route; fast: %q", r, got)
		}
	}
	for _, r := range got {
		if strings.Contains(r, ":") {
			t.Errorf("hub: fast route with a verb: %q", r)
		}
	}
}

func TestTemplateOverlaps(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"/v1/a/{x}", "/v1/a/b", true},
		{"/v1/a/{x}", "/v1/a/{y}/c", false},
		{"/v1/a/{x}", "/v1/{y=**}", true},
		{"/v1/a/{x}", "/v2/{y=**}", false},
		{"/v1/a/{x}", "/v1/{y=a/*}", true},
		{"/v1/a", "/v1/a/{x}", false},
	} {
		ta, tb := parseTemplate(c.a), parseTemplate(c.b)
		if got := overlaps(ta.segs, tb.segs); got != c.want {
			t.Errorf("overlaps(%s, %s) = %v; want %v (segs %q %q)", c.a, c.b, got, c.want, ta.segs, tb.segs)
		}
	}
}
