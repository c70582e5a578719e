package web

import "testing"

func TestSafeNextStaysOnTheSite(t *testing.T) {
	cases := []struct{ name, next, want string }{
		{"a page", "/jobs", "/jobs"},
		{"a page with a query", "/job/12?follow=1", "/job/12?follow=1"},
		{"empty", "", "/"},
		{"another site", "https://evil.example/", "/"},
		{"scheme-relative", "//evil.example", "/"},
		{"a tab browsers drop", "/\t/evil.example", "/"},
		{"a newline", "/\n/evil.example", "/"},
		{"a backslash browsers read as a slash", "/\\evil.example", "/"},
		{"a delete character", "/\x7f/evil.example", "/"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := safeNext(c.next); got != c.want {
				t.Errorf("safeNext(%q) = %q, want %q", c.next, got, c.want)
			}
		})
	}
}
