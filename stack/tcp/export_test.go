package tcp

import "fmt"

// Debug dumps the sequence state (tests only).
func (c *Conn) Debug() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("state %v una %d nxt %d max %d end %d fin %v sndWnd %d maxSndWnd %d wl1 %d wl2 %d cwnd %d rec %v recover %d dup %d timer %d rexmitOne %v | rcvNxt %d rcvRead %d rcvCap %d rcvAdv %d ooo %v finRcvd %v tsRecent %d lastAckSent %d",
		c.state, c.sndUna-c.iss, c.sndNxt-c.iss, c.sndMax-c.iss, c.sndEnd-c.iss, c.finQueued, c.sndWnd, c.maxSndWnd, c.sndWl1-c.irs, c.sndWl2-c.iss, c.cwnd, c.inRecovery, c.recover-c.iss, c.dupAcks, c.timerKind, c.rexmitOne, c.rcvNxt-c.irs, c.rcvRead-c.irs, c.rcvCap, c.rcvAdv-c.irs, c.ooo, c.finRcvd, c.tsRecent, c.lastAckSent-c.irs)
}
