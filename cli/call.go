package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/call"
	"github.com/switchboard-dev/switchboard/client"
	"github.com/switchboard-dev/switchboard/message"
)

type callFlags struct {
	describe bool
	headers  []string
	timeout  time.Duration
	verbose  bool
}

func (a *app) callCmd() *cobra.Command {
	f := &callFlags{}
	cmd := &cobra.Command{
		Use:   "call HOST|topic://TOPIC [SERVICE/METHOD] [JSON]",
		Short: "Call a unary method of any gRPC or Connect server with reflection, JSON in and out",
		Long: `Call a unary method of a server that offers gRPC server reflection (every call.Server,
the hub, grpc-go servers with reflection on): the request is JSON, read from the argument,
from stdin ("-") or "{}" when absent; the response is printed as indented JSON (the protobuf
JSON mapping: int64 as strings, enums by name, bytes as base64). The call uses the gRPC
protocol over HTTP/2 (h2c for http:// or a bare host:port, TLS for https://, trusting
--tls-ca when given).

--describe prints, as JSON, the server's services (no METHOD), one service, or one method
with its request and response messages, their fields with JSON names and types, enums,
and a request example to start from. METHOD may also be a message or enum name.

The whole command, reflection included, is bounded by --timeout (default 5s: the
fail-fast rule); methods marked NO_SIDE_EFFECTS or IDEMPOTENT are retried on
Unavailable as the call package's resilient client does. A failure is one line on
stderr with the connect code (not_found, invalid_argument, deadline_exceeded, ...)
and exit status 1.

METHOD is package.Service/Method, package.Service.Method, or Service/Method when the
short service name is unique on the server.

HOST topic://TOPIC calls a method served with call.ServeTopic through the hub (--hub):
the JSON goes as is (the server checks it; no reflection, no --describe), and the
reply is printed as indented JSON.`,
		Example: `  switchboard call localhost:8080 --describe
  switchboard call localhost:8080 payments.v1.PaymentService --describe
  switchboard call localhost:8080 payments.v1.PaymentService/Charge --describe
  switchboard call localhost:8080 payments.v1.PaymentService/Charge \
      '{"amount": {"currency": "USD", "amountMinor": "1250"}, "card": {"last4": "4242"}, "idempotencyKey": "order-1"}'
  switchboard call localhost:8080 payments.v1.PaymentService/GetCharge '{"id": "ch_1"}' --header authorization='Bearer s3cret'
  switchboard call localhost:8080 Health/Check
  switchboard call topic://payments payments.v1.PaymentService/GetCharge '{"id": "ch_1"}' --hub 127.0.0.1:7420
  echo '{"chargeId": "ch_1"}' | switchboard call https://payments.internal payments.v1.PaymentService/Refund - --timeout 2s`,
		Args: cobra.RangeArgs(1, 3),
		RunE: func(cmd *cobra.Command, args []string) error { return a.call(cmd.Context(), f, args) },
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.describe, "describe", false, "print the schema (services, a service, a method, a message) as JSON instead of calling")
	fl.StringArrayVar(&f.headers, "header", nil, "request header name=value (repeatable)")
	fl.DurationVar(&f.timeout, "timeout", 5*time.Second, "deadline of the whole command, reflection included")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "print response headers and trailers to stderr")
	return cmd
}

func (a *app) call(ctx context.Context, f *callFlags, args []string) error {
	if f.timeout <= 0 {
		return usageError{errors.New("--timeout must be positive: every call has a deadline")}
	}
	hdr := http.Header{}
	for _, h := range f.headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok {
			k, v, ok = strings.Cut(h, ":")
		}
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return usageError{fmt.Errorf("--header %q: use name=value", h)}
		}
		hdr.Add(k, strings.TrimSpace(v))
	}
	if !f.describe && len(args) < 2 {
		return usageError{errors.New("name the method to call (package.Service/Method), or use --describe to list the services")}
	}
	if f.describe && len(args) > 2 {
		return usageError{errors.New("--describe takes HOST and at most one name, no request JSON")}
	}
	if topic, ok := strings.CutPrefix(args[0], "topic://"); ok {
		return a.callTopic(ctx, f, topic, hdr, args)
	}
	base, hc, err := a.callTarget(args[0])
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	wrap := func(what string, err error) error {
		if connect.CodeOf(err) == connect.CodeDeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%s: %w (--timeout %s)", what, err, f.timeout)
		}
		return fmt.Errorf("%s: %w", what, err)
	}

	rc := grpcreflect.NewClient(hc, base, connect.WithGRPC())
	stream := rc.NewStream(ctx, grpcreflect.WithRequestHeaders(hdr))
	defer func() { _, _ = stream.Close() }()
	names, err := stream.ListServices()
	if err != nil {
		if connect.CodeOf(err) == connect.CodeUnimplemented || connect.CodeOf(err) == connect.CodeNotFound {
			err = fmt.Errorf("%w (the server offers no gRPC reflection, which switchboard call needs)", err)
		}
		return wrap("reflection on "+args[0], err)
	}
	sch := &schema{stream: stream, files: map[string]*descriptorpb.FileDescriptorProto{}}
	if len(args) == 1 {
		return a.printJSON(describeServices(ctx, sch, names))
	}
	target, err := resolveTarget(args[1], names)
	if err != nil {
		return usageError{err}
	}
	reg, err := sch.load(target.symbol)
	if err != nil {
		return wrap("reflection on "+args[0], err)
	}
	d, err := reg.FindDescriptorByName(target.symbol)
	if err != nil {
		return fmt.Errorf("%s: not found on the server: %w", target.symbol, err)
	}
	var md protoreflect.MethodDescriptor
	switch d := d.(type) {
	case protoreflect.ServiceDescriptor:
		if target.method != "" {
			md = d.Methods().ByName(target.method)
			if md == nil {
				return usageError{fmt.Errorf("%s has no method %q; it has %s", d.FullName(), target.method, methodNames(d))}
			}
		} else if !f.describe {
			return usageError{fmt.Errorf("%s is a service; name one of its methods: %s", d.FullName(), methodNames(d))}
		} else {
			return a.printJSON(describeService(d))
		}
	case protoreflect.MessageDescriptor:
		if !f.describe {
			return usageError{fmt.Errorf("%s is a message, not a method; use --describe to see it", d.FullName())}
		}
		return a.printJSON(describeMessageDoc(d))
	case protoreflect.EnumDescriptor:
		if !f.describe {
			return usageError{fmt.Errorf("%s is an enum, not a method; use --describe to see it", d.FullName())}
		}
		return a.printJSON(map[string]any{"enum": d.FullName(), "values": enumValues(d)})
	default:
		return usageError{fmt.Errorf("%s is not a service, method, message or enum", target.symbol)}
	}
	if f.describe {
		return a.printJSON(describeMethod(md))
	}
	procedure := "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
	if md.IsStreamingClient() || md.IsStreamingServer() {
		return usageError{fmt.Errorf("%s is a streaming method; switchboard call calls unary methods", strings.TrimPrefix(procedure, "/"))}
	}

	body, err := a.requestBody(args)
	if err != nil {
		return err
	}
	types := dynamicpb.NewTypes(reg)
	req := dynamicpb.NewMessage(md.Input())
	if strings.TrimSpace(body) != "" {
		if err := (protojson.UnmarshalOptions{Resolver: types}).Unmarshal([]byte(body), req); err != nil {
			return fmt.Errorf("%s: invalid_argument: the request JSON does not fit %s: %s (see --describe)",
				strings.TrimPrefix(procedure, "/"), md.Input().FullName(), strings.TrimPrefix(strings.ReplaceAll(err.Error(), "\u00a0", " "), "proto: "))
		}
	}
	out := md.Output()
	cl := connect.NewClient[dynamicpb.Message, dynamicpb.Message](hc, base+procedure,
		connect.WithGRPC(),
		connect.WithSchema(md),
		connect.WithIdempotency(connect.IdempotencyLevel(md.Options().(*descriptorpb.MethodOptions).GetIdempotencyLevel())),
		connect.WithInterceptors(call.NewClientInterceptor(&call.ClientConfig{DefaultTimeout: f.timeout})),
		connect.WithResponseInitializer(func(_ connect.Spec, msg any) error {
			dm, ok := msg.(*dynamicpb.Message)
			if !ok {
				return errors.New("response is not a dynamic message")
			}
			*dm = *dynamicpb.NewMessage(out)
			return nil
		}),
	)
	r := connect.NewRequest(req)
	for k, v := range hdr {
		r.Header()[k] = v
	}
	res, err := cl.CallUnary(ctx, r)
	if err != nil {
		return wrap(strings.TrimPrefix(procedure, "/"), err)
	}
	if f.verbose {
		printHeaders(a.cfg.Stderr, "header", res.Header())
		printHeaders(a.cfg.Stderr, "trailer", res.Trailer())
	}
	js, err := (protojson.MarshalOptions{Resolver: types}).Marshal(res.Msg)
	if err != nil {
		return fmt.Errorf("print the response: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, js, "", "  "); err != nil {
		return fmt.Errorf("print the response: %w", err)
	}
	buf.WriteByte('\n')
	_, err = a.cfg.Stdout.Write(buf.Bytes())
	return err
}

// requestBody is the request JSON: the third argument, stdin for "-", or
// "{}".
func (a *app) requestBody(args []string) (string, error) {
	if len(args) < 3 {
		return "{}", nil
	}
	if args[2] != "-" {
		return args[2], nil
	}
	b, err := io.ReadAll(a.cfg.Stdin)
	if err != nil {
		return "", fmt.Errorf("read the request from stdin: %w", err)
	}
	return string(b), nil
}

// callTopic calls a method served with call.ServeTopic through the hub
// (--hub): JSON in, JSON out, by the wire contract of docs/calls.md. No
// reflection: the JSON is checked by the server.
func (a *app) callTopic(ctx context.Context, f *callFlags, topic string, hdr http.Header, args []string) error {
	if f.describe {
		return usageError{errors.New("--describe needs gRPC reflection, which a topic does not offer; describe the service on its HTTP server")}
	}
	method := strings.TrimPrefix(args[1], "/")
	if svc, m, ok := strings.Cut(method, "/"); !ok || svc == "" || m == "" || strings.Contains(m, "/") {
		return usageError{fmt.Errorf("over a topic the method is package.Service/Method, not %q", args[1])}
	}
	body, err := a.requestBody(args)
	if err != nil {
		return err
	}
	b, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer b.Close()
	m := &message.Message{Payload: []byte(body), ContentType: "application/json"}
	for k, v := range hdr {
		m.SetHeader(strings.ToLower(k), strings.Join(v, ", "))
	}
	m.SetHeader(call.HeaderCallMethod, method)
	m.SetHeader(call.HeaderCallTimeout, strconv.FormatInt(f.timeout.Milliseconds(), 10))
	ctx, cancel := context.WithTimeout(ctx, f.timeout+time.Second) // the request's own timeout fires first
	defer cancel()
	resp, err := b.Request(ctx, topic, m, f.timeout)
	switch {
	case err == nil:
	case errors.Is(err, broker.ErrNoResponders):
		return fmt.Errorf("%s: unavailable: no responder on topic %q (is call.ServeTopic running?)", method, topic)
	case errors.Is(err, broker.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: deadline_exceeded: no reply on topic %q (--timeout %s)", method, topic, f.timeout)
	default:
		return fmt.Errorf("%s over topic %q: %w", method, topic, err)
	}
	if code := resp.Header(call.HeaderCallCode); code != "" {
		return fmt.Errorf("%s: %s: %s", method, code, resp.Header(call.HeaderCallMessage))
	}
	if f.verbose {
		keys := make([]string, 0, len(resp.Headers))
		for k := range resp.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(a.cfg.Stderr, "header %s: %s\n", k, resp.Headers[k])
		}
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, resp.Payload, "", "  "); err != nil {
		return fmt.Errorf("%s: the reply on topic %q is not JSON (content type %q): is its responder call.ServeTopic?", method, topic, resp.ContentType)
	}
	buf.WriteByte('\n')
	_, err = a.cfg.Stdout.Write(buf.Bytes())
	return err
}

// callTarget is the base URL and HTTP client for HOST: h2c for http:// and
// bare host:port, TLS for https://.
func (a *app) callTarget(host string) (string, *http.Client, error) {
	base := strings.TrimRight(host, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	var protos http.Protocols
	tr := &http.Transport{Protocols: &protos, ForceAttemptHTTP2: true}
	switch {
	case strings.HasPrefix(base, "http://"):
		protos.SetUnencryptedHTTP2(true)
	case strings.HasPrefix(base, "https://"):
		protos.SetHTTP2(true)
		if a.tlsCA != "" {
			tc, err := client.LoadCA(a.tlsCA)
			if err != nil {
				return "", nil, usageError{fmt.Errorf("--tls-ca: %w", err)}
			}
			tr.TLSClientConfig = tc
		} else {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	default:
		return "", nil, usageError{fmt.Errorf("HOST %q: use host:port, http://host:port or https://host", host)}
	}
	return base, &http.Client{Transport: tr}, nil
}

func printHeaders(w io.Writer, kind string, h http.Header) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			fmt.Fprintf(w, "%s %s: %s\n", kind, k, v)
		}
	}
}

// target is what the SERVICE/METHOD argument names.
type target struct {
	symbol protoreflect.FullName // service, message or enum
	method protoreflect.Name     // when a method of symbol
}

func resolveTarget(arg string, services []protoreflect.FullName) (target, error) {
	s := strings.TrimPrefix(strings.TrimSpace(arg), "/")
	if svc, meth, ok := strings.Cut(s, "/"); ok {
		full, err := findService(svc, services)
		if err != nil {
			return target{}, err
		}
		return target{symbol: full, method: protoreflect.Name(meth)}, nil
	}
	if full, err := findService(s, services); err == nil {
		return target{symbol: full}, nil
	}
	if i := strings.LastIndexByte(s, '.'); i > 0 {
		if full, err := findService(s[:i], services); err == nil {
			return target{symbol: full, method: protoreflect.Name(s[i+1:])}, nil
		}
	}
	if !protoreflect.FullName(s).IsValid() {
		return target{}, fmt.Errorf("%q is not a method name; use package.Service/Method (services: %s)", arg, joinNames(services))
	}
	return target{symbol: protoreflect.FullName(s)}, nil // a message or enum
}

// findService matches a full or unique short service name.
func findService(name string, services []protoreflect.FullName) (protoreflect.FullName, error) {
	var matches []protoreflect.FullName
	for _, s := range services {
		if string(s) == name {
			return s, nil
		}
		if string(s.Name()) == name {
			matches = append(matches, s)
		}
	}
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		return "", fmt.Errorf("no service %q on the server; it has %s", name, joinNames(services))
	}
	return "", fmt.Errorf("service name %q is ambiguous: %s; use the full name", name, joinNames(matches))
}

func joinNames(names []protoreflect.FullName) string {
	s := make([]string, len(names))
	for i, n := range names {
		s[i] = string(n)
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

func methodNames(sd protoreflect.ServiceDescriptor) string {
	var s []string
	for i := 0; i < sd.Methods().Len(); i++ {
		s = append(s, string(sd.Methods().Get(i).Name()))
	}
	return strings.Join(s, ", ")
}

// schema fetches file descriptors by reflection.
type schema struct {
	stream *grpcreflect.ClientStream
	files  map[string]*descriptorpb.FileDescriptorProto
}

// load fetches the file defining symbol and its dependencies and returns
// them as a registry. Dependencies the server does not send come from the
// descriptors compiled into this binary (well-known types, google.api).
func (s *schema) load(symbol protoreflect.FullName) (*protoregistry.Files, error) {
	fds, err := s.stream.FileContainingSymbol(symbol)
	if err != nil {
		if connect.CodeOf(err) == connect.CodeNotFound {
			return nil, fmt.Errorf("the server knows no symbol %q", symbol)
		}
		return nil, err
	}
	for _, fd := range fds {
		s.files[fd.GetName()] = fd
	}
	for {
		var missing []string
		for _, fd := range s.files {
			for _, dep := range fd.GetDependency() {
				if _, ok := s.files[dep]; !ok {
					missing = append(missing, dep)
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		for _, dep := range missing {
			if _, ok := s.files[dep]; ok {
				continue
			}
			got, err := s.stream.FileByFilename(dep)
			if err == nil {
				for _, fd := range got {
					s.files[fd.GetName()] = fd
				}
			}
			if _, ok := s.files[dep]; ok {
				continue
			}
			local, lerr := protoregistry.GlobalFiles.FindFileByPath(dep)
			if lerr != nil {
				if err == nil {
					err = lerr
				}
				return nil, fmt.Errorf("descriptor of %s (a dependency): %w", dep, err)
			}
			s.files[dep] = protodesc.ToFileDescriptorProto(local)
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range s.files {
		set.File = append(set.File, fd)
	}
	reg, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, fmt.Errorf("descriptors from reflection: %w", err)
	}
	return reg, nil
}

// The --describe documents.

type serviceDoc struct {
	Service string      `json:"service"`
	File    string      `json:"file,omitempty"`
	Methods []methodDoc `json:"methods"`
}

type methodDoc struct {
	Method      string `json:"method"`
	Procedure   string `json:"procedure"`
	Kind        string `json:"kind"` // unary, server-streaming, ...
	Idempotency string `json:"idempotency"`
	Input       string `json:"input"`
	Output      string `json:"output"`
}

type methodSchema struct {
	Service string `json:"service"`
	methodDoc
	// RequestExample is a request with every field set once (oneofs: the
	// first member), to edit and pass as JSON.
	RequestExample json.RawMessage `json:"requestExample"`
	// Messages are the fields of the input and output messages and of
	// every message they use, by full name.
	Messages map[string][]fieldDoc `json:"messages"`
	// Enums are the value names of the enums they use.
	Enums map[string][]string `json:"enums,omitempty"`
}

type messageSchema struct {
	Message  string                `json:"message"`
	Example  json.RawMessage       `json:"example"`
	Messages map[string][]fieldDoc `json:"messages"`
	Enums    map[string][]string   `json:"enums,omitempty"`
}

type fieldDoc struct {
	Name     string `json:"name"`
	JSONName string `json:"jsonName"`
	Number   int32  `json:"number"`
	// Type is the protobuf type: string, int64, enum, message, map, ...
	Type     string `json:"type"`
	TypeName string `json:"typeName,omitempty"` // message or enum
	// JSON is how the value is written in JSON ("string (int64 as decimal)").
	JSON     string `json:"json"`
	Repeated bool   `json:"repeated,omitempty"`
	Key      string `json:"key,omitempty"` // map key type
	Oneof    string `json:"oneof,omitempty"`
	Optional bool   `json:"optional,omitempty"`
}

func describeServices(ctx context.Context, sch *schema, names []protoreflect.FullName) any {
	sort.Slice(names, func(i, j int) bool { return names[i] < names[j] })
	type entry struct {
		Service string      `json:"service"`
		File    string      `json:"file,omitempty"`
		Methods []methodDoc `json:"methods,omitempty"`
		Error   string      `json:"error,omitempty"`
	}
	out := struct {
		Services []entry `json:"services"`
	}{Services: []entry{}}
	for _, n := range names {
		e := entry{Service: string(n)}
		reg, err := sch.load(n)
		if err == nil {
			var d protoreflect.Descriptor
			if d, err = reg.FindDescriptorByName(n); err == nil {
				if sd, ok := d.(protoreflect.ServiceDescriptor); ok {
					doc := describeService(sd)
					e.File, e.Methods = doc.File, doc.Methods
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			e.Error = err.Error()
		}
		out.Services = append(out.Services, e)
	}
	return out
}

func describeService(sd protoreflect.ServiceDescriptor) serviceDoc {
	doc := serviceDoc{Service: string(sd.FullName()), File: sd.ParentFile().Path(), Methods: []methodDoc{}}
	for i := 0; i < sd.Methods().Len(); i++ {
		doc.Methods = append(doc.Methods, methodSummary(sd.Methods().Get(i)))
	}
	return doc
}

func methodSummary(md protoreflect.MethodDescriptor) methodDoc {
	kind := "unary"
	switch {
	case md.IsStreamingClient() && md.IsStreamingServer():
		kind = "bidi-streaming"
	case md.IsStreamingClient():
		kind = "client-streaming"
	case md.IsStreamingServer():
		kind = "server-streaming"
	}
	idem := descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN
	if o, ok := md.Options().(*descriptorpb.MethodOptions); ok {
		idem = o.GetIdempotencyLevel()
	}
	return methodDoc{
		Method:      string(md.Name()),
		Procedure:   "/" + string(md.Parent().FullName()) + "/" + string(md.Name()),
		Kind:        kind,
		Idempotency: idem.String(),
		Input:       string(md.Input().FullName()),
		Output:      string(md.Output().FullName()),
	}
}

func describeMethod(md protoreflect.MethodDescriptor) methodSchema {
	c := newCollector()
	c.message(md.Input())
	c.message(md.Output())
	return methodSchema{
		Service:        string(md.Parent().FullName()),
		methodDoc:      methodSummary(md),
		RequestExample: example(md.Input()),
		Messages:       c.messages,
		Enums:          c.enumsOrNil(),
	}
}

func describeMessageDoc(md protoreflect.MessageDescriptor) messageSchema {
	c := newCollector()
	c.message(md)
	return messageSchema{Message: string(md.FullName()), Example: example(md), Messages: c.messages, Enums: c.enumsOrNil()}
}

// collector gathers the fields of messages and the values of enums
// reachable from a message.
type collector struct {
	messages map[string][]fieldDoc
	enums    map[string][]string
}

func newCollector() *collector {
	return &collector{messages: map[string][]fieldDoc{}, enums: map[string][]string{}}
}

func (c *collector) enumsOrNil() map[string][]string {
	if len(c.enums) == 0 {
		return nil
	}
	return c.enums
}

func (c *collector) message(md protoreflect.MessageDescriptor) {
	name := string(md.FullName())
	if _, ok := c.messages[name]; ok || wellKnownJSON(md) != "" {
		return
	}
	fields := []fieldDoc{}
	c.messages[name] = fields
	for i := 0; i < md.Fields().Len(); i++ {
		fd := md.Fields().Get(i)
		doc := fieldDoc{Name: string(fd.Name()), JSONName: fd.JSONName(), Number: int32(fd.Number())}
		v := fd
		if fd.IsMap() {
			doc.Type = "map"
			doc.Key = fd.MapKey().Kind().String()
			v = fd.MapValue()
			doc.JSON = "object"
		} else if fd.IsList() {
			doc.Repeated = true
		}
		if doc.Type == "" {
			doc.Type = v.Kind().String()
		}
		switch v.Kind() {
		case protoreflect.MessageKind, protoreflect.GroupKind:
			doc.TypeName = string(v.Message().FullName())
			c.message(v.Message())
		case protoreflect.EnumKind:
			doc.TypeName = string(v.Enum().FullName())
			c.enums[doc.TypeName] = enumValues(v.Enum())
		}
		if doc.JSON == "" {
			doc.JSON = jsonKind(v)
			if doc.Repeated {
				doc.JSON = "array of " + doc.JSON
			}
		} else {
			doc.JSON = "object of " + jsonKind(v) + " by " + doc.Key + " key"
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			doc.Oneof = string(od.Name())
		}
		doc.Optional = fd.HasOptionalKeyword()
		fields = append(fields, doc)
	}
	c.messages[name] = fields
}

func enumValues(ed protoreflect.EnumDescriptor) []string {
	var v []string
	for i := 0; i < ed.Values().Len(); i++ {
		v = append(v, string(ed.Values().Get(i).Name()))
	}
	return v
}

// jsonKind is how the protobuf JSON mapping writes a value of fd's type.
func jsonKind(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return "boolean"
	case protoreflect.StringKind:
		return "string"
	case protoreflect.BytesKind:
		return "string (base64)"
	case protoreflect.EnumKind:
		return "string (enum value name)"
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return "string (64-bit integer in decimal)"
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return "number"
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if w := wellKnownJSON(fd.Message()); w != "" {
			return w
		}
		return "object"
	}
	return "number (integer)"
}

// wellKnownJSON is the JSON form of a well-known type ("" for others).
func wellKnownJSON(md protoreflect.MessageDescriptor) string {
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		return "string (RFC 3339 time, e.g. 2024-01-31T12:00:00Z)"
	case "google.protobuf.Duration":
		return "string (seconds with suffix s, e.g. 1.5s)"
	case "google.protobuf.Struct":
		return "object (any JSON)"
	case "google.protobuf.Value":
		return "any JSON value"
	case "google.protobuf.ListValue":
		return "array (any JSON)"
	case "google.protobuf.FieldMask":
		return "string (comma-separated paths)"
	case "google.protobuf.Any":
		return `object with "@type"`
	case "google.protobuf.Empty":
		return "object (empty)"
	case "google.protobuf.StringValue", "google.protobuf.BytesValue", "google.protobuf.BoolValue",
		"google.protobuf.Int32Value", "google.protobuf.UInt32Value", "google.protobuf.Int64Value",
		"google.protobuf.UInt64Value", "google.protobuf.FloatValue", "google.protobuf.DoubleValue":
		return jsonKind(md.Fields().ByName("value")) + " or null"
	}
	return ""
}

// example writes a request with each field set once, in field order.
func example(md protoreflect.MessageDescriptor) json.RawMessage {
	var b bytes.Buffer
	writeExample(&b, md, map[protoreflect.FullName]bool{})
	return b.Bytes()
}

func writeExample(b *bytes.Buffer, md protoreflect.MessageDescriptor, open map[protoreflect.FullName]bool) {
	if w := wellKnownExample(md); w != "" {
		b.WriteString(w)
		return
	}
	if open[md.FullName()] { // recursive type: stop here
		b.WriteString("{}")
		return
	}
	open[md.FullName()] = true
	defer delete(open, md.FullName())
	b.WriteByte('{')
	oneofs := map[protoreflect.FullName]bool{}
	first := true
	for i := 0; i < md.Fields().Len(); i++ {
		fd := md.Fields().Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if oneofs[od.FullName()] {
				continue
			}
			oneofs[od.FullName()] = true
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		name, _ := json.Marshal(fd.JSONName())
		b.Write(name)
		b.WriteByte(':')
		switch {
		case fd.IsMap():
			key := `"key"`
			switch fd.MapKey().Kind() {
			case protoreflect.BoolKind:
				key = `"true"`
			case protoreflect.StringKind:
			default:
				key = `"0"`
			}
			b.WriteString("{" + key + ":")
			writeValue(b, fd.MapValue(), open)
			b.WriteByte('}')
		case fd.IsList():
			b.WriteByte('[')
			writeValue(b, fd, open)
			b.WriteByte(']')
		default:
			writeValue(b, fd, open)
		}
	}
	b.WriteByte('}')
}

func writeValue(b *bytes.Buffer, fd protoreflect.FieldDescriptor, open map[protoreflect.FullName]bool) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		b.WriteString("false")
	case protoreflect.StringKind:
		b.WriteString(`""`)
	case protoreflect.BytesKind:
		b.WriteString(`""`)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		v := vals.Get(0)
		if vals.Len() > 1 {
			v = vals.Get(1) // the first value after the zero one
		}
		name, _ := json.Marshal(string(v.Name()))
		b.Write(name)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b.WriteString(`"0"`)
	case protoreflect.MessageKind, protoreflect.GroupKind:
		writeExample(b, fd.Message(), open)
	default:
		b.WriteString("0")
	}
}

func wellKnownExample(md protoreflect.MessageDescriptor) string {
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		return `"2024-01-31T12:00:00Z"`
	case "google.protobuf.Duration":
		return `"1.5s"`
	case "google.protobuf.Struct", "google.protobuf.Empty":
		return "{}"
	case "google.protobuf.Value":
		return "null"
	case "google.protobuf.ListValue":
		return "[]"
	case "google.protobuf.FieldMask":
		return `""`
	case "google.protobuf.Any":
		return `{"@type":"type.googleapis.com/package.Message"}`
	case "google.protobuf.StringValue", "google.protobuf.BytesValue", "google.protobuf.Int64Value", "google.protobuf.UInt64Value":
		return `""`
	case "google.protobuf.BoolValue":
		return "false"
	case "google.protobuf.Int32Value", "google.protobuf.UInt32Value", "google.protobuf.FloatValue", "google.protobuf.DoubleValue":
		return "0"
	}
	return ""
}
