package policy

import (
	"fmt"
	"strings"
)

// Action is what phonehome does with a query.
type Action uint8

const (
	// Allow forwards the query and counts it.
	Allow Action = iota + 1
	// Log forwards, counts and writes the query log.
	Log
	// Sinkhole answers locally, counts and writes the query log.
	Sinkhole
)

var actionNames = [...]string{Allow: "allow", Log: "log", Sinkhole: "sinkhole"}

// ActionWords lists the actions for error messages.
const ActionWords = "allow, log, sinkhole"

func (a Action) String() string {
	if int(a) < len(actionNames) && actionNames[a] != "" {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// ParseAction reads an action as a user writes it.
func ParseAction(s string) (Action, error) {
	for a, n := range actionNames {
		if n != "" && strings.EqualFold(strings.TrimSpace(s), n) {
			return Action(a), nil
		}
	}
	return 0, fmt.Errorf("unknown action %q (valid: %s)", s, ActionWords)
}

// MarshalText writes the action's name.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }
