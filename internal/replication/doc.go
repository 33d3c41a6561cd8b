// Package replication is the master's decision logic for chunk copies:
// where new copies go (Place), what a chunk needs to reach its goal (Plan)
// and which of those actions may start now (Schedule).
//
// It is a pure core in the sense of meta.Apply: it reads a snapshot of the
// chunkservers (a Cluster) and the state of one chunk, and returns actions;
// it does no I/O and starts no goroutines. The master walks its chunk table
// in slices, calls Plan for each chunk, hands the actions to Schedule and
// carries out those that fit. Everything is deterministic: randomness used
// to spread load comes from the caller's source (Place) or is derived from
// the chunk id (Plan), so the same inputs always give the same actions and
// tests can pin them.
//
// # Goals
//
// A goal is either a MooseFS copy count, "1" to "9" (copies on distinct
// servers), or a SeaweedFS placement "xyz": x copies in other data centers,
// y copies in other racks of the same data center and z copies on other
// servers of the same rack, x+y+z+1 copies in all. An xyz layout has a
// primary rack holding z+1 copies, y other racks of the primary data center
// holding one copy each and x other data centers holding one copy each;
// this is the check SeaweedFS's volume.fix.replication makes.
//
// # Rules
//
// Plan follows what a MooseFS operator expects:
//
//   - A copy is valid when its version is the chunk's and it is not
//     damaged. Stale and damaged copies are deleted only once the valid
//     copies reach the goal, or when their server is the only place left
//     for a missing copy. A chunk with no valid copy is reported lost and
//     nothing of it is ever deleted, stale copies included: they are all the
//     data there is.
//   - Valid copies are never deleted below the goal, counting only copies
//     that exist now (never ones still being replicated), so every action is
//     safe on its own and the master may run, defer or lose any of them.
//   - Copies on servers marked for removal count toward the goal but are
//     replaced first: new copies go elsewhere, and the old ones are deleted
//     once the goal is met without them.
//   - Over goal, the copy that breaks the placement goes first, then the
//     one on the most used server.
//   - In no-delete mode (SeaweedFS's volume.fix.replication -doDelete=false)
//     only Replicate actions are returned.
//
// Placement never uses a full server or one marked for removal, prefers the
// lowest used ratio, and picks at random among servers within NearEqual of
// the best so that a newly added empty server is not handed every copy at
// once. When the xyz topology cannot be met (say goal 100 with a single
// data center) copies still go to distinct servers, as many as the goal
// asks; Cluster.Check tells the operator why the layout is not reached.
package replication
