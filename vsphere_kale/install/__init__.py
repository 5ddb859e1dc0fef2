"""Install, uninstall, doctor: rendering deploy/, certificates and their rotation."""
