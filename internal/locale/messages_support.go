package locale

// spanishSupport is the Spanish of the support view (internal/support) and
// of the verdicts and advice it shows (internal/history), keyed by the
// English text.
func spanishSupport() map[string]string {
	return map[string]string{
		// internal/history: the fate of a link's email.
		"sent":               "enviado",
		"failed":             "falló",
		"failed permanently": "falló definitivamente",

		// internal/history: verdicts.
		"No state on record for its scope: linkpipe cannot tell whether it works.": "No hay estado registrado para su ámbito: linkpipe no puede saber si funciona.",
		"Works, but its email was not delivered (%s).":                             "Funciona, pero su correo no se entregó (%s).",
		"Works; its email failed for now and will be retried (%s).":                "Funciona; su correo falló por ahora y se reintentará (%s).",
		"Works: the client can use it until %s.":                                   "Funciona: el cliente puede usarlo hasta el %s.",
		"Refused: a newer link (%s) replaced this one.":                            "Rechazado: un enlace más reciente (%s) reemplazó a este.",
		"Refused: it was already used on %s; each such link works once.":           "Rechazado: ya se usó el %s; cada enlace de este tipo funciona una sola vez.",
		"Refused: it was already used; each such link works once.":                 "Rechazado: ya se usó; cada enlace de este tipo funciona una sola vez.",
		"Refused: the appointment's window ended %s.":                              "Rechazado: el horario de la cita terminó el %s.",
		"Refused: it expired %s.":                                                  "Rechazado: caducó el %s.",
		"no reason given":                                                          "sin motivo indicado",
		"Refused: the practice revoked the client's links (%s).":                   "Rechazado: el consultorio revocó los enlaces del cliente (%s).",
		"Refused: the appointment was canceled.":                                   "Rechazado: la cita se canceló.",
		"Not yet valid: it works from %s.":                                         "Aún no es válido: funciona desde el %s.",
		"Refused (%s).":                                                            "Rechazado (%s).",

		// internal/history: what to do.
		"Resend: a new link gets a fresh record.":                                                                                                                      "Reenviar: un enlace nuevo tiene un registro nuevo.",
		"Resend: publish the action again with a new event id, and linkpipe mails a new link.":                                                                         "Reenviar: publique la acción de nuevo con un id de evento nuevo y linkpipe enviará un enlace nuevo por correo.",
		"Resend: send the client a new sign-in link (or they can ask for one from the refusal page).":                                                                  "Reenviar: envíe al cliente un nuevo enlace de inicio de sesión (o puede pedirlo desde la página de rechazo).",
		"Resend: share the document again (a new share id) for a new link.":                                                                                            "Reenviar: comparta el documento de nuevo (con un id de compartición nuevo) para obtener un enlace nuevo.",
		"Resend: an appointment reminder carries the appointment's current link.":                                                                                      "Reenviar: un recordatorio de la cita lleva el enlace actual de la cita.",
		"Wait a few minutes for the retry; if the email still does not arrive, resend.":                                                                                "Espere unos minutos al reintento; si el correo sigue sin llegar, reenvíelo.",
		"Nothing to do. If the client cannot find the email, ask them to check spam, or resend.":                                                                       "Nada que hacer. Si el cliente no encuentra el correo, pídale que revise la carpeta de spam, o reenvíelo.",
		"Ask the client to use the newest email; if it did not arrive, resend.":                                                                                        "Pida al cliente que use el correo más reciente; si no le llegó, reenvíelo.",
		"If the appointment moves, reschedule it: the same link works again in its new window.":                                                                        "Si la cita cambia, reprográmela: el mismo enlace vuelve a funcionar en su nuevo horario.",
		"Resend only if the reason for the revocation no longer holds.":                                                                                                "Reenvíe solo si el motivo de la revocación ya no se aplica.",
		"Nothing to resend: the appointment was canceled. Book it again to send a new link.":                                                                           "Nada que reenviar: la cita se canceló. Prográmela de nuevo para enviar un enlace nuevo.",
		"Nothing to do: ask the client to try again from %s.":                                                                                                          "Nada que hacer: pida al cliente que lo intente de nuevo desde el %s.",
		"Check the client's address. If it was suppressed after a bounce or complaint and is now fixed, unsuppress it (actions.address.unsuppressed), then resend. %s": "Compruebe la dirección del cliente. Si se bloqueó tras un rebote o una queja y ya está corregida, desbloquéela (actions.address.unsuppressed) y luego reenvíe. %s",
		"The address is suppressed (%s): check it with the client; once it is fixed, unsuppress it (`%s`), then resend. %s":                                            "La dirección está bloqueada (%s): compruébela con el cliente; una vez corregida, desbloquéela (`%s`) y luego reenvíe. %s",

		// internal/history: delivery.
		"mailbox does not exist":                                                 "el buzón no existe",
		"the address is on SES's suppression list":                               "la dirección está en la lista de bloqueo de SES",
		"mailbox full":                                                           "buzón lleno",
		"message too large":                                                      "mensaje demasiado grande",
		"the receiving server rejected the content":                              "el servidor de destino rechazó el contenido",
		"the receiving server refused it":                                        "el servidor de destino lo rechazó",
		"the recipient marked an email as spam":                                  "el destinatario marcó un correo como spam",
		"permanent bounce (%s)":                                                  "rebote permanente (%s)",
		"last email bounced (%s) at %s":                                          "el último correo rebotó (%s) el %s",
		"the client marked the last email as spam at %s":                         "el cliente marcó el último correo como spam el %s",
		"last email delivered at %s":                                             "último correo entregado el %s",
		"last email accepted by the mail service at %s (no delivery report yet)": "último correo aceptado por el servicio de correo el %s (aún sin informe de entrega)",
		"last email not sent: %s":                                                "último correo no enviado: %s",
		"<the client's address>":                                                 "<la dirección del cliente>",
		"address suppressed since %s (%s)":                                       "dirección bloqueada desde el %s (%s)",
		"unsuppress with `%s`":                                                   "desbloquee con `%s`",
		"address was suppressed, lifted at %s":                                   "la dirección estuvo bloqueada; se desbloqueó el %s",
	}
}
