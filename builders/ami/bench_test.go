package ami

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/gpuforge/gpuforge/internal/awsemu"
)

// BenchmarkUploadSnapshotLatency uploads 256 MiB of random data (512 blocks) to awsemu with 20 ms added to
// every PutSnapshotBlock, for 8, 32 and 64 workers, and reports the throughput and its fraction of the
// ideal workers × 512 KiB / 20 ms.
//
//	go test -run '^$' -bench UploadSnapshotLatency -benchtime 3x ./builders/ami/
func BenchmarkUploadSnapshotLatency(b *testing.B) {
	const size, latency = 256 << 20, 20 * time.Millisecond
	dir := b.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	data := make([]byte, size)
	_, _ = rand.Read(data)
	if err := os.WriteFile(disk, data, 0o644); err != nil {
		b.Fatal(err)
	}
	for _, workers := range []int{8, 32, 64} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			srv, err := awsemu.Start(filepath.Join(b.TempDir(), "emu"))
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			srv.Inject(awsemu.Fault{Op: "PutSnapshotBlock", Kind: awsemu.FaultLatency, Latency: latency})
			cfg, err := LoadConfig(context.Background(), Config{Endpoint: srv.URL(), Region: "us-east-1",
				Credentials: credentials.NewStaticCredentialsProvider(awsemu.DefaultAccessKeyID, awsemu.DefaultSecretAccessKey, "")})
			if err != nil {
				b.Fatal(err)
			}
			var upload time.Duration
			b.ResetTimer()
			for range b.N {
				res, err := UploadSnapshot(context.Background(), cfg, disk, UploadOptions{Workers: workers})
				if err != nil {
					b.Fatal(err)
				}
				upload += res.Took
				b.StopTimer()
				c := newClients(cfg, "")
				if err := deleteSnapshot(context.Background(), c, res.SnapshotID, defaultRetry); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			mibps := float64(size>>20) * float64(b.N) / upload.Seconds()
			ideal := float64(workers) * 0.5 / latency.Seconds()
			b.ReportMetric(mibps, "MiB/s")
			b.ReportMetric(ideal, "ideal-MiB/s")
			b.ReportMetric(100*mibps/ideal, "%ideal")
		})
	}
}
