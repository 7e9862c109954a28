package main

import (
	"encoding/json"
	"fmt"
	"os"
)

// checkOutput refuses an -o value other than text or json before a
// command does any work.
func checkOutput(output string) error {
	if output != "text" && output != "json" {
		return fmt.Errorf("-o must be text or json")
	}
	return nil
}

// printJSON writes v to stdout as indented JSON, the one shape every
// command's -o json shares.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// emit prints v as JSON with -o json, and otherwise runs text, which
// prints it for people.
func emit(output string, v any, text func()) error {
	if output == "json" {
		return printJSON(v)
	}
	text()
	return nil
}
