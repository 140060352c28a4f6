// Package broker is the contract between Switchboard and its backends.
//
// User code normally goes through the root switchboard package; this package
// is for backend implementers, the consumer runtime and the hub.
//
// # Must implement
//
// Every backend implements [Broker]: Publish, Subscribe, Capabilities and
// Close. Capabilities declares what the backend does natively. A request for
// something the backend cannot do (a group on Redis Pub/Sub, a delay on a
// backend without delay) is refused with an error that wraps
// [ErrNotSupported] and names the option; a backend never silently ignores an
// option. [PrepareMessages] and [CheckSubscribe] implement those refusals once for
// every backend.
//
// # May implement
//
// Optional interfaces, found by type assertion: [Requester] (request/reply),
// [TopicAdmin], [GroupAdmin] and [DeadLetterAdmin].
//
// # Registration
//
// A backend registers a URL scheme with [Register] from its package's init,
// the way database/sql drivers do, and [Open] dispatches on the scheme.
//
// The interfaces in this package may grow; implementations outside this
// repository should embed nothing and expect to be updated.
package broker
