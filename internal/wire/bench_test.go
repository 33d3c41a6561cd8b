package wire

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
)

var benchSizes = []int{64, 4 << 10, 1 << 20}

// BenchmarkReadFrame compares ReadFrame, which allocates each payload so
// that frames can be handed to other goroutines, with ReadFrameBuf into
// one reused buffer. The numbers decided the API: see the package report
// in docs/PROTOCOL.md ("Reading frames").
func BenchmarkReadFrame(b *testing.B) {
	for _, size := range benchSizes {
		frame := AppendFrame(nil, Frame{Type: TypePing, ID: 1, Payload: make([]byte, size)})
		const n = 64
		stream := bytes.Repeat(frame, n)
		for _, mode := range []string{"alloc", "reuse"} {
			b.Run(strconv.Itoa(size)+"/"+mode, func(b *testing.B) {
				b.SetBytes(int64(len(frame)))
				b.ReportAllocs()
				buf := make([]byte, size+crcSize)
				src := bytes.NewReader(stream)
				r := NewFrameReader(src, 0)
				for i := 0; b.Loop(); i++ {
					if i%n == 0 {
						src.Reset(stream)
						r = NewFrameReader(src, 0)
					}
					var err error
					if mode == "alloc" {
						_, err = r.ReadFrame()
					} else {
						_, err = r.ReadFrameBuf(buf)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkWrite compares FrameWriter, which encodes straight into its
// batch buffer, with the obvious alternative: Marshal the payload, then
// copy header, payload and CRC into a bufio.Writer.
func BenchmarkWrite(b *testing.B) {
	for _, size := range benchSizes {
		msg := &Ping{Data: make([]byte, size)}
		b.Run(strconv.Itoa(size)+"/framewriter", func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			w := NewFrameWriter(io.Discard, 0)
			for i := 0; b.Loop(); i++ {
				if err := w.WriteMessage(uint64(i), 0, msg); err != nil {
					b.Fatal(err)
				}
			}
			_ = w.Flush()
		})
		b.Run(strconv.Itoa(size)+"/marshal+bufio", func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			bw := bufio.NewWriterSize(io.Discard, flushAt)
			for i := 0; b.Loop(); i++ {
				p := Marshal(msg)
				hdr := appendHeader(make([]byte, 0, headerSize), msg.Type(), 0, uint64(i))
				f := finishFrame(append(hdr, p...), 0)
				_, _ = bw.Write(f)
			}
			_ = bw.Flush()
		})
	}
}

// BenchmarkMuxCall measures pipelined calls on one loopback TCP
// connection from many goroutines, and reports how many frames each
// write carried.
func BenchmarkMuxCall(b *testing.B) {
	cn, sn := tcpPair(b)
	counted := &countingConn{Conn: cn}
	type res struct {
		c   *Conn
		err error
	}
	done := make(chan res, 1)
	go func() {
		c, err := ServerHandshake(b.Context(), sn, ServerConfig{Role: RoleMaster})
		done <- res{c, err}
	}()
	cc, err := ClientHandshake(b.Context(), counted, ClientConfig{Role: RoleClient})
	s := <-done
	if err != nil || s.err != nil {
		b.Fatal(err, s.err)
	}
	cm, sm := NewMux(cc, MuxConfig{}), NewMux(s.c, MuxConfig{Handler: echo(nil)})
	defer sm.Close()
	defer cm.Close()
	b.SetParallelism(16)
	b.ReportAllocs()
	counted.writes.Store(0)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var pong Pong
		for pb.Next() {
			if err := cm.CallInto(b.Context(), &Ping{Data: []byte("12345678")}, &pong); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/float64(max(1, counted.writes.Load())), "frames/write")
}

type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}
