package meta

// nodeTable holds the nodes by inode number in fixed pages, so growing it
// never copies what is there: a 10 M-file table grows by appending a page
// pointer, not by moving 400 MB (which cost 8 % of replay time as one
// slice) nor by briefly needing twice the memory.
type nodeTable struct {
	pages [][]node
	n     int
}

const (
	pageBits = 16
	pageSize = 1 << pageBits
)

func (t *nodeTable) len() int { return t.n }

// at returns node i, which must be below len.
func (t *nodeTable) at(i uint32) *node { return &t.pages[i>>pageBits][i&(pageSize-1)] }

// add appends a zero node and returns its index. Pages after the first
// are allocated whole; the first grows by appending, so a small file
// system stays small. A pointer from at is valid until the next add.
func (t *nodeTable) add() uint32 {
	last := len(t.pages) - 1
	if last < 0 || len(t.pages[last]) == pageSize {
		c := pageSize
		if last < 0 {
			c = 256
		}
		t.pages = append(t.pages, make([]node, 0, c))
		last++
	}
	t.pages[last] = append(t.pages[last], node{})
	t.n++
	return uint32(t.n - 1)
}

// growTo appends zero nodes until the table holds n.
func (t *nodeTable) growTo(n int) {
	for t.n < n {
		t.add()
	}
}
