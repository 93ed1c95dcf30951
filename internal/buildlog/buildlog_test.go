package buildlog

import (
	"context"
	"testing"
	"time"
)

// The Pro builder's own announcement of build secrets shows this line:
// "2026-03-24T11:15:13Z [stage-1 2/4] COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog".
func TestPlainIsTheProBuildersForm(t *testing.T) {
	at := time.Date(2026, 3, 24, 12, 15, 13, 0, time.FixedZone("CET", 3600)) // written in UTC
	step := "[stage-1 2/4] COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog"
	for _, c := range []struct{ got, want string }{
		{Plain.Step(at, step), "2026-03-24T11:15:13Z " + step},
		{Plain.StepDone(at, step, 1234*time.Millisecond), "2026-03-24T11:15:13Z " + step + " 1.23s"},
		{Plain.StepDone(at, step, 50*time.Millisecond), "2026-03-24T11:15:13Z " + step + " 0.05s"},
		{Plain.StepCached(at, step), "2026-03-24T11:15:13Z " + step + " CACHED"},
		{Plain.StepFailed(at, "[2/2] RUN x", "exit code: 3"), "2026-03-24T11:15:13Z [2/2] RUN x ERROR: exit code: 3"},
		{Plain.Status(at, "building on tcp://b:1234"), "2026-03-24T11:15:13Z building on tcp://b:1234"},
		{Plain.Output(at, "hello"), "2026-03-24T11:15:13Z hello"},
		{Plain.Warning(at, "FromAsCasing"), "2026-03-24T11:15:13Z WARNING: FromAsCasing"},
		{Prefixed.Step(at, step), "v: 2026-03-24T11:15:13Z " + step},
		{Prefixed.StepDone(at, step, 1234*time.Millisecond), "v: 2026-03-24T11:15:13Z " + step + " 1.2s"},
		{Prefixed.Status(at, "x"), "s: 2026-03-24T11:15:13Z x"},
		{Prefixed.Output(at, "x"), "l: 2026-03-24T11:15:13Z x"},
		{Prefixed.Warning(at, "x"), "w: 2026-03-24T11:15:13Z x"},
	} {
		if c.got != c.want {
			t.Errorf("got  %q\nwant %q", c.got, c.want)
		}
	}
}

func TestFormatTravelsWithTheContext(t *testing.T) {
	if From(context.Background()) != Plain {
		t.Error("the default is not Plain")
	}
	if From(WithFormat(context.Background(), Prefixed)) != Prefixed {
		t.Error("WithFormat lost")
	}
	for in, want := range map[string]Format{"": Plain, "plain": Plain, "Prefixed": Prefixed} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseFormat("v1"); err == nil {
		t.Error("ParseFormat accepted v1")
	}
}
