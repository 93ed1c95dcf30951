package function

import (
	"context"
	"log"
	"strings"
	"time"

	"github.com/fnbuilder/fnbuilder/internal/buildkit"
	"github.com/fnbuilder/fnbuilder/internal/schedule"
)

// How often the process mode is asked: soon while some replica has not
// answered, rarely once all have (a replica may be redeployed otherwise).
const (
	sandboxRetry = 5 * time.Second
	sandboxCheck = 5 * time.Minute
)

// watchSandbox asks every BuildKit replica whether its build steps run in
// the process sandbox, logs the answer, and lets builds of different
// tenants run side by side only when all of them do (or the operator
// allows it anyway). Until every replica has answered, tenants take turns.
func watchSandbox(builders []*buildkit.Builder, slots *schedule.Slots, shareUnsandboxed bool) {
	slots.OneTenantAtATime(!shareUnsandboxed)
	last := ""
	for {
		var modes []string
		known, sandboxed := true, true
		for _, b := range builders {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			mode, err := b.ProcessMode(ctx)
			cancel()
			if err != nil {
				mode = "unknown (" + err.Error() + ")"
				known = false
			}
			sandboxed = sandboxed && mode == "sandbox"
			modes = append(modes, b.Address()+": "+mode)
		}
		exclusive := !sandboxed && !shareUnsandboxed
		slots.OneTenantAtATime(exclusive)
		if report := strings.Join(modes, ", "); report != last {
			last = report
			switch {
			case sandboxed:
				log.Printf("build-fn: BuildKit process mode %s: builds of different tenants run side by side", report)
			case exclusive:
				log.Printf("build-fn: BuildKit process mode %s: not every replica is known to keep build steps in its process sandbox, so builds of different tenants take turns", report)
			default:
				log.Printf("build-fn: WARNING: BuildKit process mode %s, and allow_unsandboxed_concurrent_tenants is set: one tenant's build steps can read another's secrets and processes", report)
			}
		}
		if known {
			time.Sleep(sandboxCheck)
		} else {
			time.Sleep(sandboxRetry)
		}
	}
}
