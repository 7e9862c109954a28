package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestCallStreamAndError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	srv, err := Listen(path, func(ctx context.Context, req Request, s *Stream) (any, error) {
		switch req.Op {
		case "count":
			var n int
			if err := req.Decode(&n); err != nil {
				return nil, err
			}
			for i := 0; i < n; i++ {
				s.Send(i)
			}
			return n, nil
		case "wait":
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, errors.New("unknown op " + req.Op)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	var got []int
	var total int
	err = Call(ctx, path, "count", 3, &total, func(m json.RawMessage) error {
		var i int
		json.Unmarshal(m, &i)
		got = append(got, i)
		return nil
	})
	if err != nil || total != 3 || len(got) != 3 || got[2] != 2 {
		t.Fatalf("count: err=%v total=%d got=%v", err, total, got)
	}
	err = Call(ctx, path, "nope", nil, nil, nil)
	if !errors.Is(err, ErrRemote) {
		t.Fatalf("want ErrRemote, got %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := Call(cctx, path, "wait", nil, nil, nil); err == nil {
		t.Fatal("wait returned without error after the context expired")
	}
}
