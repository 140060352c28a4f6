package consume

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// Handler is what the runtime runs for each message of a registration. Build
// one with Func (typed, decoded by content type), TxFunc (typed, inside the
// SQL inbox's transaction), Raw (the message as is) or HandlerOf (any of
// those function shapes, checked once by reflection).
type Handler struct {
	typ   string
	plain func(ctx context.Context, m *message.Message) error
	tx    func(ctx context.Context, tx *sql.Tx, m *message.Message) error
}

// IsTx reports whether the handler needs a transactional inbox (TxFunc).
func (h Handler) IsTx() bool { return h.tx != nil }

func (h Handler) valid() bool { return h.plain != nil || h.tx != nil }

// Func returns a Handler that decodes each payload into a new T (JSON, or
// protobuf when *T is a proto.Message; see Decode) and calls fn. A payload
// that does not decode is dead-lettered at once with reason "decode".
func Func[T any](fn func(ctx context.Context, m *T) error) Handler {
	typ := reflect.TypeFor[T]().String()
	return Handler{typ: typ, plain: func(ctx context.Context, m *message.Message) error {
		v := new(T)
		if err := Decode(m, v); err != nil {
			return err
		}
		return fn(ctx, v)
	}}
}

// TxFunc returns a Handler that runs fn inside the transaction in which the
// SQL inbox records the message as handled: fn's writes through tx and the
// mark commit together or not at all (exactly-once effect). fn must not
// commit or roll back tx. It needs an Inbox that implements TxInbox.
func TxFunc[T any](fn func(ctx context.Context, tx *sql.Tx, m *T) error) Handler {
	typ := reflect.TypeFor[T]().String()
	return Handler{typ: typ, tx: func(ctx context.Context, tx *sql.Tx, m *message.Message) error {
		v := new(T)
		if err := Decode(m, v); err != nil {
			return err
		}
		return fn(ctx, tx, v)
	}}
}

// Raw returns a Handler that gets the message undecoded.
func Raw(fn func(ctx context.Context, m *message.Message) error) Handler {
	return Handler{typ: "message.Message", plain: fn}
}

var (
	ctxType = reflect.TypeFor[context.Context]()
	errType = reflect.TypeFor[error]()
	txType  = reflect.TypeFor[*sql.Tx]()
	msgType = reflect.TypeFor[*message.Message]()
)

// HandlerOf turns fn into a Handler. fn may be a Handler, or a function of
// one of these shapes (T any type, decoded by content type):
//
//	func(context.Context, *T) error
//	func(context.Context, *message.Message) error   // undecoded
//	func(context.Context, *sql.Tx, *T) error        // as TxFunc
//
// The shape is checked here, once, by reflection; calls are direct (no
// reflect.Value.Call per message).
func HandlerOf(fn any) (Handler, error) {
	switch f := fn.(type) {
	case Handler:
		if !f.valid() {
			return Handler{}, fmt.Errorf("consume: zero Handler; build it with Func, TxFunc or Raw")
		}
		return f, nil
	case func(context.Context, *message.Message) error:
		return Raw(f), nil
	case nil:
		return Handler{}, fmt.Errorf("consume: nil handler")
	}
	v := reflect.ValueOf(fn)
	t := v.Type()
	bad := fmt.Errorf("consume: handler of type %s: want func(context.Context, *T) error or func(context.Context, *sql.Tx, *T) error", t)
	if t.Kind() != reflect.Func || v.IsNil() || t.NumOut() != 1 || t.Out(0) != errType || t.IsVariadic() {
		return Handler{}, bad
	}
	switch t.NumIn() {
	case 2:
		if t.In(0) != ctxType || t.In(1).Kind() != reflect.Pointer {
			return Handler{}, bad
		}
		if t.In(1) == msgType {
			return Raw(func(ctx context.Context, m *message.Message) error {
				return callErr(v, reflect.ValueOf(ctx), reflect.ValueOf(m))
			}), nil
		}
		elem := t.In(1).Elem()
		return Handler{typ: typeName(elem), plain: func(ctx context.Context, m *message.Message) error {
			p := reflect.New(elem)
			if err := Decode(m, p.Interface()); err != nil {
				return err
			}
			return callErr(v, reflect.ValueOf(ctx), p)
		}}, nil
	case 3:
		if t.In(0) != ctxType || t.In(1) != txType || t.In(2).Kind() != reflect.Pointer {
			return Handler{}, bad
		}
		elem := t.In(2).Elem()
		return Handler{typ: typeName(elem), tx: func(ctx context.Context, tx *sql.Tx, m *message.Message) error {
			p := reflect.New(elem)
			if err := Decode(m, p.Interface()); err != nil {
				return err
			}
			return callErr(v, reflect.ValueOf(ctx), reflect.ValueOf(tx), p)
		}}, nil
	}
	return Handler{}, bad
}

// callErr calls fn (whose shape HandlerOf checked) and returns its error.
// Typed handlers built with Func or TxFunc avoid this reflective call.
func callErr(fn reflect.Value, args ...reflect.Value) error {
	err, _ := fn.Call(args)[0].Interface().(error)
	return err
}

type deliveryKey struct{}

// DeliveryFrom returns the delivery a handler is running for (its attempt,
// sequence, key, headers), or nil outside a handler.
func DeliveryFrom(ctx context.Context) *broker.Delivery {
	d, _ := ctx.Value(deliveryKey{}).(*broker.Delivery)
	return d
}
