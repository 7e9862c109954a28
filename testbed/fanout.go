package testbed

import "sync"

// fanOut calls fn(i) for every i in [0, n), at most limit calls at once,
// and returns when all have returned. The supervisor's calls to its
// peripherals (joins, status, declarations of a death) go through it: at
// 1,000 peripherals on 2 cores, unbounded calls time each other out. A
// goroutine starts only when a slot is free, so a thousand calls do not
// park a thousand goroutines on the bound.
func fanOut(n, limit int, fn func(i int)) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, max(limit, 1))
	for i := range n {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			fn(i)
		})
	}
	wg.Wait()
}
