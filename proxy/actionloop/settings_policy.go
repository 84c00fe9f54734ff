// settings_policy.go: who may set the runtime's settings.
//
// The operator configures the runtime through the container's environment.
// An action's /init env is written by the action's author: it may choose
// among the secure settings, but nothing in it may weaken isolation for the
// action's callers (REWIND_MEMORY=none, REWIND_FILES=off, the first-request
// checkpoint, debug output that reaches later activations' logs) or point
// the runtime elsewhere (user, sidecar, paths), unless the operator allows it
// with REWIND_ALLOW_ACTION_SETTINGS.

package actionloop

import (
	"fmt"
	"sort"
	"strings"
)

// actionSettings are the REWIND_* settings an action's /init env may set,
// with the values it may give them (nil: any value).
var actionSettings = map[string][]string{
	"REWIND_MEMORY":     {"auto", "kernel", "fork", "inplace", "fresh"},
	"REWIND_CHECKPOINT": {"init", "warmup"},
	"REWIND_WARMUP":     nil,
	"REWIND_PREFAULT":   nil,
}

// checkActionEnv refuses an /init env that sets a runtime setting the
// action's author may not set.
func checkActionEnv(env map[string]string, allowAll bool) error {
	if allowAll {
		return nil
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !strings.HasPrefix(k, "REWIND_") {
			continue
		}
		allowed, known := actionSettings[k]
		if !known {
			return fmt.Errorf("the action's env sets %s, which only the operator may set (in the container's environment)", k)
		}
		if allowed != nil && !contains(allowed, env[k]) {
			return fmt.Errorf("the action's env sets %s=%s; an action may choose only %s (weaker settings are the operator's, see docs/SECURITY.md)", k, env[k], strings.Join(allowed, ", "))
		}
	}
	return nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
