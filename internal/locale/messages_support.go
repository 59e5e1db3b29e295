package locale

// spanishSupport is the Spanish of the support view (internal/support) and
// of the verdicts and advice it shows (internal/history), keyed by the
// English text.
func spanishSupport() map[string]string {
	return map[string]string{}
}
