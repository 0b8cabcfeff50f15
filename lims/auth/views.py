"""Login, logout and the user's own account."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from lims import db
from lims.auth import services
from lims.auth.access import allow_all_roles, public
from lims.auth.forms import ChangePasswordForm, ConfirmForm, LoginForm
from lims.errors import AuthenticationFailed, ValidationError

bp = Blueprint("auth", __name__, template_folder="templates")


def _safe_next(target: str | None) -> str:
    # Only paths on this server: an open redirect after login is a phishing aid.
    if target and target.startswith("/") and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("home.index")


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = services.authenticate(
                db.session(), username=form.username.data, password=form.password.data
            )
        except AuthenticationFailed as exc:
            flash(exc.message, "error")
            status = exc.status_code
        else:
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@allow_all_roles
def logout():
    form = ConfirmForm()
    if form.validate_on_submit():
        logout_user()
        flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/account", methods=["GET", "POST"])
@allow_all_roles
def account():
    form = ChangePasswordForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = services.change_password(
                db.session(),
                user=current_user,
                current_password=form.current_password.data,
                new_password=form.new_password.data,
            )
        except ValidationError as exc:
            getattr(form, exc.field or "new_password").errors.append(exc.message)
            status = exc.status_code
        else:
            login_user(user)  # the session version changed; keep this browser logged in
            flash("Your password is changed.", "success")
            return redirect(url_for("auth.account"))
    elif request.method == "POST":
        status = 422
    return render_template("auth/account.html", form=form), status
