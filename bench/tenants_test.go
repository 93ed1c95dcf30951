package bench

import (
	"fmt"
	"os"
	"testing"

	"github.com/fnbuilder/fnbuilder/internal/signature"
)

// benchmarkSpoolTenants is the HMAC verify while spooling of the 256 MiB
// intake request on a builder with n tenants: a client that does not name
// its tenant (faas-cli, go-sdk) has its body checked under every key, and
// the one that signed it is the last tried.
func benchmarkSpoolTenants(b *testing.B, n int) {
	keys := make([][]byte, n)
	for i := range n - 1 {
		keys[i] = []byte(fmt.Sprintf("another-tenant-%d", i))
	}
	keys[n-1] = intakeKey
	work := b.TempDir()
	timeIntake(b, func(f *os.File, sig string, _ int64) (func(), error) {
		sp, who, err := signature.Spool(f, sig, keys, signature.Options{Dir: work, Limit: 2 << 30})
		if err == nil && who != n-1 {
			err = fmt.Errorf("key %d", who)
		}
		if err != nil {
			return nil, err
		}
		return func() { sp.Close() }, nil
	})
}

func BenchmarkSpoolTenants1(b *testing.B)  { benchmarkSpoolTenants(b, 1) }
func BenchmarkSpoolTenants4(b *testing.B)  { benchmarkSpoolTenants(b, 4) }
func BenchmarkSpoolTenants16(b *testing.B) { benchmarkSpoolTenants(b, 16) }
