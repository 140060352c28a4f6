// Package message defines the unit that every Switchboard backend moves: a
// [Message] (what a publisher sends), its delivery metadata ([Info]), message
// IDs (UUIDv7), and the naming and size rules that every backend enforces the
// same way ([Limits], [ValidateTopic], [ValidatePattern], [ValidateGroup]).
//
// The package has no dependencies beyond the standard library so that
// backends, the consumer runtime and the hub can all share it.
package message
