package locale

// spanishDev is the Spanish of the dev pages (internal/devstack: /dev, the
// scenario panel, the demo portal) and of the inbox (internal/mailer's
// sink pages), keyed by the English text.
func spanishDev() map[string]string {
	return map[string]string{
		// The inbox (internal/mailer).
		"linkpipe mail sink": "buzón local de linkpipe",
		"inbox":              "bandeja de entrada",
		"Inbox":              "Bandeja de entrada",
		"Not found":          "No encontrado",
		"(none)":             "(ninguno)",
		"Emails the mailer sends appear here, newest first.": "Los correos que envía el mailer aparecen aquí, del más reciente al más antiguo.",
		"Check for new email":                                "Buscar correos nuevos",
		"(this page does not refresh itself).":               "(esta página no se actualiza sola).",
		"For scripts:":                                       "Para scripts:",
		"The email you asked for has not arrived yet; check again in a moment.": "El correo que pidió aún no ha llegado; vuelva a mirar en un momento.",
		"Emails":    "Correos",
		"To":        "Para",
		"Subject":   "Asunto",
		"Received":  "Recibido",
		"Link":      "Enlace",
		"Open link": "Abrir el enlace",
		"No email yet. Ask for a sign-in link and it shows up here within a second.": "Aún no hay correos. Pida un enlace de inicio de sesión y aparecerá aquí en un segundo.",
		"There is no email with that id in this inbox.":                              "No hay ningún correo con ese id en esta bandeja de entrada.",
		"Links in this email":       "Enlaces de este correo",
		"HTML":                      "HTML",
		"HTML version of the email": "Versión HTML del correo",
		"Plain text":                "Texto sin formato",
	}
}
