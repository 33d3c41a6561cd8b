package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/carpfs/carpfs/internal/replication"
)

// GoalXattr is the virtual extended attribute through which mfsmount
// answers an inode's goal (getxattr, as replication.Goal.String) and
// changes it (setxattr, any goal replication.ParseGoal reads). It is not
// stored and not listed, so copying files elsewhere never carries it.
// Setting it needs write permission on the inode, as for any attribute
// outside the user./trusted./security./system. namespaces.
const GoalXattr = "carpfs.goal"

// fuseMagic is the f_type statfs(2) reports for a FUSE file system.
const fuseMagic = 0x65735546

// GetGoal returns the goal of path (symbolic links followed) on a
// carpfs mount.
func GetGoal(path string) (replication.Goal, error) {
	buf := make([]byte, 16)
	n, err := syscall.Getxattr(path, GoalXattr, buf)
	if err != nil {
		return replication.Goal{}, goalErr("get goal", path, err)
	}
	g, err := replication.ParseGoal(strings.TrimSuffix(string(buf[:n]), "\n"))
	if err != nil {
		return replication.Goal{}, fmt.Errorf("%s: the mount answered %s=%q: %w", path, GoalXattr, buf[:n], err)
	}
	return g, nil
}

// SetGoal sets the goal of path (symbolic links followed) on a carpfs
// mount.
func SetGoal(path string, g replication.Goal) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if err := syscall.Setxattr(path, GoalXattr, []byte(g.String()), 0); err != nil {
		return goalErr("set goal "+g.String(), path, err)
	}
	return nil
}

// goalErr words an xattr error: a path outside carpfs answers ENOTSUP or
// ENODATA, which alone would not tell the user what is wrong.
// EPERM on a set is the master's refusal: a goal outside the export's
// mingoal-maxgoal.
func goalErr(op, path string, err error) error {
	if errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("%s: %s: %w (refused by the master: outside the goals the export allows?)", op, path, err)
	}
	if !errors.Is(err, syscall.ENOTSUP) && !errors.Is(err, syscall.ENODATA) {
		return &fs.PathError{Op: op, Path: path, Err: err}
	}
	var st syscall.Statfs_t
	if serr := syscall.Statfs(path, &st); serr == nil && st.Type != fuseMagic {
		return fmt.Errorf("%s: not on a carpfs mount (%s: %w)", path, GoalXattr, err)
	}
	return fmt.Errorf("%s: the mount does not answer %s (not carpfs, or an mfsmount without goals): %w", path, GoalXattr, err)
}

// denied reports a permission error, counted apart as MooseFS does.
func denied(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EROFS)
}

// goalGet prints each path's goal; with recursive, a directory's tree is
// summed up as counts of files and directories per goal, as mfsgetgoal
// -r does. It returns whether every path was read.
func goalGet(paths []string, recursive bool, stdout, stderr io.Writer) bool {
	ok := true
	for _, p := range paths {
		if !recursive {
			g, err := GetGoal(p)
			if err != nil {
				fmt.Fprintf(stderr, "%v\n", err)
				ok = false
				continue
			}
			fmt.Fprintf(stdout, "%s: %s\n", p, g)
			continue
		}
		files, dirs := map[string]int{}, map[string]int{}
		walkOK := walk(p, stderr, func(path string, isDir bool) {
			g, err := GetGoal(path)
			if err != nil {
				fmt.Fprintf(stderr, "%v\n", err)
				ok = false
				return
			}
			if isDir {
				dirs[g.String()]++
			} else {
				files[g.String()]++
			}
		})
		ok = ok && walkOK
		fmt.Fprintf(stdout, "%s:\n", p)
		for _, g := range sortedGoals(files) {
			fmt.Fprintf(stdout, " files with goal        %3s : %10d\n", g, files[g])
		}
		for _, g := range sortedGoals(dirs) {
			fmt.Fprintf(stdout, " directories with goal  %3s : %10d\n", g, dirs[g])
		}
	}
	return ok
}

// goalSet sets each path's goal; with recursive, that of every file and
// directory below too, reporting counts as mfssetgoal -r does. It
// returns whether every inode took the goal.
func goalSet(g replication.Goal, paths []string, recursive bool, stdout, stderr io.Writer) bool {
	ok := true
	for _, p := range paths {
		if !recursive {
			if err := SetGoal(p, g); err != nil {
				fmt.Fprintf(stderr, "%v\n", err)
				ok = false
				continue
			}
			fmt.Fprintf(stdout, "%s: %s\n", p, g)
			continue
		}
		var changed, same, refused, failed int
		walkOK := walk(p, stderr, func(path string, _ bool) {
			old, err := GetGoal(path)
			if err == nil && old == g {
				same++
				return
			}
			if err == nil {
				err = SetGoal(path, g)
			}
			switch {
			case err == nil:
				changed++
			case denied(err):
				refused++
				fmt.Fprintf(stderr, "%v\n", err)
			default:
				failed++
				fmt.Fprintf(stderr, "%v\n", err)
			}
		})
		ok = ok && walkOK && refused == 0 && failed == 0
		fmt.Fprintf(stdout, "%s:\n", p)
		fmt.Fprintf(stdout, " inodes with goal changed:      %10d\n", changed)
		fmt.Fprintf(stdout, " inodes with goal not changed:  %10d\n", same)
		fmt.Fprintf(stdout, " inodes with permission denied: %10d\n", refused)
		if failed > 0 {
			fmt.Fprintf(stdout, " inodes with other errors:      %10d\n", failed)
		}
	}
	return ok
}

// walk calls f for root (symbolic link followed, as for a single path)
// and every regular file and directory below it. Symbolic links below
// root are not followed, and other types hold no data, so they are
// skipped. It returns false if part of the tree could not be read.
func walk(root string, stderr io.Writer, f func(path string, isDir bool)) bool {
	// WalkDir does not descend into a root that is a symbolic link.
	if real, err := filepath.EvalSymlinks(root); err == nil {
		root = real
	}
	ok := true
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			ok = false
			if d != nil && d.IsDir() && path != root {
				return fs.SkipDir
			}
			return nil
		}
		if path == root {
			f(path, d.IsDir())
			return nil
		}
		if t := d.Type(); t.IsRegular() || t.IsDir() {
			f(path, t.IsDir())
		}
		return nil
	})
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		ok = false
	}
	return ok
}

// sortedGoals orders the goals of a count map: copy counts first, then
// xyz goals, each ascending.
func sortedGoals(m map[string]int) []string {
	var gs []string
	for g := range m {
		gs = append(gs, g)
	}
	slices.SortFunc(gs, func(a, b string) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
	return gs
}
