package locale

// spanishDev is the Spanish of the dev pages (internal/devstack: /dev, the
// scenario panel, the demo portal) and of the inbox (internal/mailer's
// sink pages), keyed by the English text.
func spanishDev() map[string]string {
	return map[string]string{}
}
