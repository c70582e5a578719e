package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-ci/kiln/builder"
)

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func init() {
	store := &cobra.Command{
		Use:   "store",
		Short: "List, measure and collect the builder's snapshots",
	}

	var lsFlags builderFlags
	var lsJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List snapshots, most recently used first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := lsFlags.open(builder.Options{})
			if err != nil {
				return err
			}
			metas, err := b.Store().List()
			if err != nil {
				return err
			}
			sort.Slice(metas, func(i, j int) bool { return metas[i].LastUsed.After(metas[j].LastUsed) })
			if lsJSON {
				e := json.NewEncoder(os.Stdout)
				e.SetIndent("", "  ")
				return e.Encode(metas)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tPARENT\tSIZE\tLAST USED\tSTEP")
			for _, m := range metas {
				parent := m.Parent
				if len(parent) > 12 {
					parent = parent[:12]
				}
				step := m.Description
				if len(step) > 70 {
					step = step[:67] + "..."
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.ID[:min(12, len(m.ID))], parent, humanSize(m.Size),
					m.LastUsed.Local().Format(time.DateTime), strings.ReplaceAll(step, "\n", " "))
			}
			return w.Flush()
		},
	}
	lsFlags.add(ls)
	ls.Flags().BoolVar(&lsJSON, "json", false, "print JSON")

	var duFlags builderFlags
	du := &cobra.Command{
		Use:   "du",
		Short: "Show the disk use of the store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := duFlags.open(builder.Options{})
			if err != nil {
				return err
			}
			metas, err := b.Store().List()
			if err != nil {
				return err
			}
			var total int64
			for _, m := range metas {
				total += m.Size
			}
			fmt.Printf("%d snapshots, %s (%d bytes), driver %s, in %s\n", len(metas), humanSize(total), total,
				b.Store().Driver(), b.Store().Root())
			versions, err := b.Caches().List()
			if err != nil {
				return err
			}
			var ctotal int64
			for _, m := range versions {
				ctotal += m.Size
			}
			fmt.Printf("%d cache versions, %s (%d bytes), in %s\n", len(versions), humanSize(ctotal), ctotal, b.Caches().Root())
			return nil
		},
	}
	duFlags.add(du)

	var gcFlags builderFlags
	var budget, minFree string
	var dryRun bool
	gc := &cobra.Command{
		Use:   "gc",
		Short: "Remove least recently used snapshots down to a size budget and up to a free-space floor",
		Long: `gc removes snapshots that no other snapshot builds on, least recently used first,
until the store fits --budget and the disk has --min-free free. Snapshots used by
running builds (in any process sharing the store) are never removed.`,
		Example: `  kiln store gc --budget 50G --min-free 20G`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			bud, err := parseSize(budget)
			if err != nil {
				return fmt.Errorf("--budget: %w", err)
			}
			mf, err := parseSize(minFree)
			if err != nil {
				return fmt.Errorf("--min-free: %w", err)
			}
			b, err := gcFlags.open(builder.Options{})
			if err != nil {
				return err
			}
			ctx, cancel := signalContext()
			defer cancel()
			rep, err := b.GC(ctx, builder.GCOptions{Budget: bud, MinFree: mf, DryRun: dryRun})
			if err != nil {
				return err
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			for _, id := range rep.Removed {
				fmt.Println(id)
			}
			fmt.Fprintf(os.Stderr, "%s %d snapshots, %s; %s kept\n", verb, len(rep.Removed), humanSize(rep.Freed), humanSize(rep.Kept))
			return nil
		},
	}
	gcFlags.add(gc)
	gc.Flags().StringVar(&budget, "budget", "", "largest total size of snapshots to keep (e.g. 50G)")
	gc.Flags().StringVar(&minFree, "min-free", "", "free space to keep on the store's disk (default 256M)")
	gc.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be removed")

	store.AddCommand(ls, du, gc)
	addCommand(store)
}
