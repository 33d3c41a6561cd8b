package metadump

import (
	"bytes"
	"io"
	"testing"
	"time"
)

const benchFiles = 200_000

// BenchmarkEncode dumps a namespace of 200k files (about 400k records) to
// memory; the master's dump time is this plus the disk.
func BenchmarkEncode(b *testing.B) {
	s := bigState(b, benchFiles)
	var buf bytes.Buffer
	h, err := Encode(&buf, s, Options{Now: fixedClock})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(h.Size)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if _, err := Encode(io.Discard, s, Options{Now: fixedClock}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(h.Records)*float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// BenchmarkDecode loads the same dump: framing, checksums and meta.Builder.
func BenchmarkDecode(b *testing.B) {
	var buf bytes.Buffer
	h, err := Encode(&buf, bigState(b, benchFiles), Options{Now: fixedClock})
	if err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.SetBytes(h.Size)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if _, _, err := Decode(bytes.NewReader(data), ReadOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(h.Records)*float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// BenchmarkVerify checks the same dump without building the state: the
// cost of framing and CRC alone.
func BenchmarkVerify(b *testing.B) {
	var buf bytes.Buffer
	h, err := Encode(&buf, bigState(b, benchFiles), Options{Now: fixedClock})
	if err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.SetBytes(h.Size)
	b.ResetTimer()
	for b.Loop() {
		if _, err := verify(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
