package locale

// Plural keys: durations in words.
const (
	keyDays    = "%d days"
	keyHours   = "%d hours"
	keyMinutes = "%d minutes"
)

// pluralMessage is a message with a number in it, in each language's one
// and other forms (CLDR's categories for English and Spanish).
type pluralMessage struct {
	key                            string
	enOne, enOther, esOne, esOther string
}

func plurals() []pluralMessage {
	return []pluralMessage{
		{keyDays, "%d day", "%d days", "%d día", "%d días"},
		{keyHours, "%d hour", "%d hours", "%d hora", "%d horas"},
		{keyMinutes, "%d minute", "%d minutes", "%d minuto", "%d minutos"},
	}
}

// spanish is every Spanish text, keyed by its English text: the clients'
// emails and pages (spanishClients), the dev pages and inbox (spanishDev,
// messages_dev.go) and the support view with its verdicts (spanishSupport,
// messages_support.go). A key must be in one of them only.
func spanish() map[string]string {
	all := map[string]string{}
	for _, part := range []map[string]string{spanishClients(), spanishDev(), spanishSupport()} {
		for k, v := range part {
			all[k] = v
		}
	}
	return all
}

// spanishClients is the Spanish of the emails and of the redeemer's pages.
// The arguments keep the English order; %[n]s reorders where Spanish needs
// it. Clients are addressed as "usted", as a health practice would.
func spanishClients() map[string]string {
	return map[string]string{
		// Emails: every kind.
		"Hello %s,": "Hola, %s:",
		"Hello,":    "Hola:",
		"Sent by %s through its client portal. Reply to this email to reach %s.":                                  "Enviado por %s a través de su portal de clientes. Responda a este correo para comunicarse con %s.",
		"Sent by %s through its client portal. Replies to this address are not read; please contact %s directly.": "Enviado por %s a través de su portal de clientes. Las respuestas a esta dirección no se leen; comuníquese directamente con %s.",
		"If the button does not work, copy this address into your browser:":                                       "Si el botón no funciona, copie esta dirección en su navegador:",
		"The link opens a page with a button; nothing happens until you press it, so it is safe for your email provider to check the link first. If the link no longer works, that page tells you why and lets you ask for a fresh one.": "El enlace abre una página con un botón; no pasa nada hasta que lo pulse, así que su proveedor de correo puede revisar el enlace antes sin riesgo. Si el enlace ya no funciona, esa página le dice por qué y le permite pedir uno nuevo.",
		"This link works once and is valid for %s, until %s.": "Este enlace funciona una sola vez y es válido durante %s, hasta el %s.",
		"This link works once, until %s.":                     "Este enlace funciona una sola vez, hasta el %s.",

		// Sign-in.
		"Your sign-in link for %s (valid until %s)":                "Su enlace para iniciar sesión en %s (válido hasta el %s)",
		"Sign in to %s. The link works once, until %s.":            "Inicie sesión en %s. El enlace funciona una sola vez, hasta el %s.",
		"Here is your link to sign in to the client portal of %s.": "Aquí tiene su enlace para iniciar sesión en el portal de clientes de %s.",
		"Sign in to %s": "Iniciar sesión en %s",
		"If you ask for another sign-in link, only the newest one works.":                             "Si pide otro enlace de inicio de sesión, solo funcionará el más reciente.",
		"If you did not ask for this link, you can ignore this email: nobody can sign in without it.": "Si usted no pidió este enlace, puede ignorar este correo: nadie puede iniciar sesión sin él.",

		// Document.
		"%s shared \u201c%s\u201d with you (link valid until %s)":       "%s compartió \u201c%s\u201d con usted (enlace válido hasta el %s)",
		"%s shared a document with you. The link works once, until %s.": "%s compartió un documento con usted. El enlace funciona una sola vez, hasta el %s.",
		"%s shared a document with you: \u201c%s\u201d.":                "%s compartió un documento con usted: \u201c%s\u201d.",
		"Open the document": "Abrir el documento",

		// Appointments.
		" with %s":          " con %s",
		"appointment":       "cita",
		"video appointment": "cita por video",
		"To join the video appointment, sign in to the client portal, or reply to this email to ask the practice for a link.": "Para unirse a la cita por video, inicie sesión en el portal de clientes o responda a este correo para pedir un enlace a la consulta.",
		"This appointment is in person.": "Esta cita es en persona.",
		"You can use this link as often as you need: if you lose the connection, click it again to rejoin.":           "Puede usar este enlace tantas veces como necesite: si pierde la conexión, haga clic de nuevo para volver a entrar.",
		"You can use this link as often as you need, until %s: if you lose the connection, click it again to rejoin.": "Puede usar este enlace tantas veces como necesite, hasta el %s: si pierde la conexión, haga clic de nuevo para volver a entrar.",
		"Join the video appointment":                                     "Unirse a la cita por video",
		"Appointment confirmed: %s%s \u2013 %s":                          "Cita confirmada: %s%s \u2013 %s",
		"Your %s on %s is confirmed.":                                    "Su %s del %s está confirmada.",
		"Your %s%s at %s is confirmed for %s.":                           "Su %s%s en %s está confirmada para el %s.",
		"Reminder: your appointment on %s%s \u2013 %s":                   "Recordatorio: su cita del %s%s \u2013 %s",
		"A reminder of your %s on %s.":                                   "Un recordatorio de su %s del %s.",
		"This is a reminder of your %s%s at %s on %s.":                   "Le recordamos su %s%s en %s el %s.",
		"Your video link stays the same; it now works for the new time.": "Su enlace de video es el mismo; ahora funciona para la nueva hora.",
		"Appointment moved to %s%s \u2013 %s":                            "Cita cambiada al %s%s \u2013 %s",
		"Your appointment now takes place on %s.":                        "Su cita ahora es el %s.",
		"Your appointment%s at %s has moved. It now takes place on %s.":  "Su cita%s en %s ha cambiado. Ahora es el %s.",
		"The video link of this appointment no longer works.":            "El enlace de video de esta cita ya no funciona.",
		"Appointment canceled: %s%s \u2013 %s":                           "Cita cancelada: %s%s \u2013 %s",
		"Your appointment on %s has been canceled.":                      "Su cita del %s ha sido cancelada.",
		"Your appointment%s at %s on %s has been canceled.":              "Su cita%s en %s del %s ha sido cancelada.",

		// Pages: the confirm page of each purpose.
		"We ask you to press the button so that email security checks, which open links automatically, cannot use up your link.": "Le pedimos que pulse el botón para que los controles de seguridad del correo, que abren los enlaces automáticamente, no puedan gastar su enlace.",
		"Open your document \u2013 %s": "Abrir su documento \u2013 %s",
		"Open your document":           "Abrir su documento",
		"%s shared a document with you. Press the button to open it in your client portal.":  "%s compartió un documento con usted. Pulse el botón para abrirlo en su portal de clientes.",
		"Join your video appointment \u2013 %s":                                              "Unirse a su cita por video \u2013 %s",
		"Join your video appointment":                                                        "Unirse a su cita por video",
		"Your video appointment with %s. Press the button to join it in your client portal.": "Su cita por video con %s. Pulse el botón para unirse desde su portal de clientes.",
		"Join the appointment":                                                               "Unirse a la cita",
		"Sign in \u2013 %s":                                                                  "Iniciar sesión \u2013 %s",
		"Sign in to your client portal":                                                      "Iniciar sesión en su portal de clientes",
		"You asked to sign in to %s's client portal. Press the button to continue.":          "Usted pidió iniciar sesión en el portal de clientes de %s. Pulse el botón para continuar.",
		"Sign in": "Iniciar sesión",

		// Pages: refusals, by reason.
		"This link has expired":           "Este enlace ha caducado",
		"This link has already been used": "Este enlace ya se usó",
		"There is a newer link":           "Hay un enlace más reciente",
		"This link was turned off":        "Este enlace fue desactivado",
		"This appointment was canceled":   "Esta cita fue cancelada",
		"This link is not active yet":     "Este enlace aún no está activo",
		"We could not find this link":     "No encontramos este enlace",
		"This link cannot be used":        "Este enlace no se puede usar",
		"This link has expired. Links stop working after a while to keep your account safe.":                                                  "Este enlace ha caducado. Los enlaces dejan de funcionar después de un tiempo para proteger su cuenta.",
		"This link has already been used. Each sign-in link works once, so nobody else can reuse it.":                                         "Este enlace ya se usó. Cada enlace de inicio de sesión funciona una sola vez, para que nadie más pueda volver a usarlo.",
		"A newer link was sent to you after this one, so this older link no longer works. Use the newest email, or ask for a new link below.": "Después de este enlace se le envió uno más reciente, así que este ya no funciona. Use el correo más reciente o pida un enlace nuevo aquí abajo.",
		"This link was turned off by your practice.":                                                                                          "Su consulta desactivó este enlace.",
		"This appointment was canceled, so its link no longer works.":                                                                         "Esta cita fue cancelada, así que su enlace ya no funciona.",
		"This link is not active yet. Please try again closer to the time in your email.":                                                     "Este enlace aún no está activo. Vuelva a intentarlo más cerca de la hora indicada en su correo.",
		"We could not find this link. It may have been copied incompletely; please open it straight from your email.":                         "No encontramos este enlace. Puede que se haya copiado incompleto; ábralo directamente desde su correo.",
		"This link cannot be used.": "Este enlace no se puede usar.",
		"Reason code: %s":           "Código del motivo: %s",
		"Email me a new link":       "Enviarme un enlace nuevo",
		"We will send it to the email address your practice has on file.": "Se lo enviaremos a la dirección de correo que su consulta tiene registrada.",

		// Pages: the answers that only say something.
		"Check your email": "Revise su correo",
		"If this link is on record, we've emailed a new one to the address your practice has on file.":       "Si este enlace está registrado, le enviamos uno nuevo a la dirección que su consulta tiene registrada.",
		"It can take a minute or two to arrive. Use the newest email you receive; older links stop working.": "Puede tardar uno o dos minutos en llegar. Use el correo más reciente que reciba; los enlaces anteriores dejan de funcionar.",
		"Please try again in a minute": "Vuelva a intentarlo en un minuto",
		"Something went wrong on our side and we could not open your link just now. Your link has not been used. Please try again in a minute.": "Algo falló de nuestro lado y no pudimos abrir su enlace en este momento. Su enlace no se ha usado. Vuelva a intentarlo en un minuto.",
		"Too many requests": "Demasiadas solicitudes",
		"Too many links were opened from your network just now. Please wait a minute and open your link again. Your link has not been used.": "Se abrieron demasiados enlaces desde su red en este momento. Espere un minuto y vuelva a abrir su enlace. Su enlace no se ha usado.",
		"Please open the link from your email": "Abra el enlace desde su correo",
		"This request came from another website, so we did not act on it. Open the link straight from your email and press the button there.": "Esta solicitud vino de otro sitio web, así que no la atendimos. Abra el enlace directamente desde su correo y pulse el botón allí.",
	}
}
