package policy

// The parser's checks on names, shared with what writes policies
// (policy/suggest): a proposal validates by construction, one name at a
// time, instead of failing whole on a name the parser refuses.

// ValidName reports whether s may name a set or a rule: letters, digits,
// '-', '_' and '.', 1 to 128 bytes.
func ValidName(s string) bool { return validName(s) }

// ValidHost reports whether h, written as it is, is a host a rule's hosts
// accepts as one exact name (not a wildcard, not an IP literal) that
// matches only itself: the parser's check, and h already canonical.
func ValidHost(h string) bool {
	hp, err := parseHostPattern(h)
	return err == nil && !hp.glob && hp.name == h
}

// HasRule reports whether set (a set's name, or "default") has a rule,
// enabled or not, named name: a rule added to the set needs another name.
func (p *Policy) HasRule(set, name string) bool {
	s := p.def
	for _, x := range p.sets {
		if x.name == set {
			s = x
		}
	}
	if set != s.name {
		return false
	}
	return s.ruleNames[name]
}
