package sqsface

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	sigAlgorithm = "AWS4-HMAC-SHA256"
	maxClockSkew = 15 * time.Minute
)

// authenticate verifies the request's AWS Signature Version 4 when the face
// has Credentials; without them every request is accepted, signed or not.
// Only the Authorization header form is verified (not presigned URLs).
func (f *Face) authenticate(hr *http.Request, body []byte) *apiError {
	if len(f.cfg.Credentials) == 0 {
		return nil
	}
	auth := hr.Header.Get("Authorization")
	if auth == "" {
		return errAuth(http.StatusForbidden, "MissingAuthenticationToken", "Request is missing Authentication Token")
	}
	alg, rest, _ := strings.Cut(auth, " ")
	if alg != sigAlgorithm {
		return errAuth(http.StatusBadRequest, "IncompleteSignature", "Unsupported authorization algorithm %q: only %s is accepted.", alg, sigAlgorithm)
	}
	fields := map[string]string{}
	for p := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		fields[k] = v
	}
	cred, signed, sig := fields["Credential"], fields["SignedHeaders"], fields["Signature"]
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || signed == "" || sig == "" || parts[4] != "aws4_request" {
		return errAuth(http.StatusBadRequest, "IncompleteSignature", "Authorization header requires Credential, SignedHeaders and Signature: %s", auth)
	}
	key, date, region, service := parts[0], parts[1], parts[2], parts[3]
	secret, ok := f.cfg.Credentials[key]
	if !ok {
		return errAuth(http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
	}
	if region != f.cfg.Region || service != "sqs" {
		return errAuth(http.StatusForbidden, "SignatureDoesNotMatch", "Credential should be scoped to region %q and service \"sqs\", not %q and %q.", f.cfg.Region, region, service)
	}
	amzDate := hr.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil || !strings.HasPrefix(amzDate, date) {
		return errAuth(http.StatusBadRequest, "IncompleteSignature", "The X-Amz-Date header %q is missing or does not match the credential scope date.", amzDate)
	}
	if d := time.Since(t); d > maxClockSkew || d < -maxClockSkew {
		return errAuth(http.StatusForbidden, "RequestExpired", "Request has expired: signed at %s, more than 15 minutes from the server's time.", amzDate)
	}
	headers := strings.Split(signed, ";")
	if !slices.Contains(headers, "host") {
		return errAuth(http.StatusBadRequest, "IncompleteSignature", "The host header must be signed.")
	}
	var canon strings.Builder
	canon.WriteString(hr.Method + "\n")
	path := hr.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	canon.WriteString(uriEncode(path, false) + "\n")
	canon.WriteString(canonicalQuery(hr.URL.RawQuery) + "\n")
	for _, h := range headers {
		var vals []string
		switch h {
		case "host":
			vals = []string{hr.Host}
		case "content-length":
			vals = hr.Header.Values("Content-Length")
			if len(vals) == 0 {
				vals = []string{strconv.FormatInt(hr.ContentLength, 10)}
			}
		default:
			vals = hr.Header.Values(h)
		}
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ")
		}
		canon.WriteString(h + ":" + strings.Join(vals, ",") + "\n")
	}
	canon.WriteString("\n" + signed + "\n")
	payload := hr.Header.Get("X-Amz-Content-Sha256")
	if payload == "" {
		sum := sha256.Sum256(body)
		payload = hex.EncodeToString(sum[:])
	}
	canon.WriteString(payload)
	crHash := sha256.Sum256([]byte(canon.String()))
	scope := date + "/" + region + "/" + service + "/aws4_request"
	toSign := sigAlgorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(crHash[:])
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	k = hmacSHA256(k, "aws4_request")
	want := hex.EncodeToString(hmacSHA256(k, toSign))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return errAuth(http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
	}
	return nil
}

func hmacSHA256(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// canonicalQuery sorts and re-encodes query parameters as SigV4 wants.
func canonicalQuery(raw string) string {
	if raw == "" {
		return ""
	}
	vals, _ := url.ParseQuery(raw)
	var pairs []string
	for k, vs := range vals {
		for _, v := range vs {
			pairs = append(pairs, uriEncode(k, true)+"="+uriEncode(v, true))
		}
	}
	slices.Sort(pairs)
	return strings.Join(pairs, "&")
}

// uriEncode percent-encodes everything but unreserved characters (and '/'
// unless encodeSlash).
func uriEncode(s string, encodeSlash bool) string {
	const hexd = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && !encodeSlash) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&15])
	}
	return b.String()
}
