"""Administration of user accounts and sites. Accounts are deactivated, never deleted."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from wtforms import SelectChoice

from lims import db
from lims.auth import services
from lims.auth.access import allow
from lims.auth.forms import ConfirmForm, NewUserForm, SetPasswordForm, SiteForm, UserForm
from lims.auth.models import ApiToken, Role, Site, User
from lims.errors import DomainError

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")


def _site_choices() -> list[SelectChoice]:
    sites = db.session().scalars(select(Site).order_by(Site.code))
    return [SelectChoice(site.id, str(site)) for site in sites]


def _show_error(form, exc: DomainError) -> int:
    field = getattr(form, exc.field, None) if exc.field else None
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, exc.message]
    else:
        flash(exc.message, "error")
    return exc.status_code


@bp.route("/users")
@allow(Role.ADMIN)
def users():
    query = select(User).join(User.site).order_by(Site.code, User.username)
    role = request.args.get("role", "")
    if role in {r.value for r in Role}:
        query = query.where(User.role == Role(role))
    show = request.args.get("show", "active")
    if show == "active":
        query = query.where(User.active.is_(True))
    elif show == "inactive":
        query = query.where(User.active.is_(False))
    rows = db.session().scalars(query).all()
    return render_template("admin/users.html", users=rows, role=role, show=show, now=db.utcnow())


@bp.route("/users/new", methods=["GET", "POST"])
@allow(Role.ADMIN)
def new_user():
    form = NewUserForm()
    form.site_id.choices = _site_choices()
    status = 200
    if form.validate_on_submit():
        site = services.get_site(db.session(), form.site_id.data)
        try:
            user = services.create_user(
                db.session(),
                actor=current_user,
                username=form.username.data,
                full_name=form.full_name.data,
                email=form.email.data or "",
                role=form.role.data,
                site_code=site.code,
                password=form.password.data,
                must_change_password=True,
            )
        except DomainError as exc:
            status = _show_error(form, exc)
        else:
            flash(f"User {user.username} created.", "success")
            return redirect(url_for("admin.edit_user", user_id=user.id))
    elif request.method == "POST":
        status = 422
    return render_template("admin/user_new.html", form=form), status


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@allow(Role.ADMIN)
def edit_user(user_id: int):
    session = db.session()
    user = session.get(User, user_id) or abort(404)
    form = UserForm(obj=user)
    form.site_id.choices = _site_choices()
    status = 200
    if form.validate_on_submit():
        try:
            services.update_user(
                session,
                actor=current_user,
                user_id=user.id,
                full_name=form.full_name.data,
                email=form.email.data or "",
                role=form.role.data,
                site_id=form.site_id.data,
                active=form.active.data,
            )
        except DomainError as exc:
            status = _show_error(form, exc)
        else:
            flash(f"User {user.username} saved.", "success")
            return redirect(url_for("admin.edit_user", user_id=user.id))
    elif request.method == "POST":
        status = 422
    tokens = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at)
    ).all()
    return (
        render_template(
            "admin/user_edit.html",
            user=user,
            form=form,
            password_form=SetPasswordForm(),
            confirm_form=ConfirmForm(),
            tokens=tokens,
            now=db.utcnow(),
        ),
        status,
    )


@bp.route("/users/<int:user_id>/unlock", methods=["POST"])
@allow(Role.ADMIN)
def unlock_user(user_id: int):
    if ConfirmForm().validate_on_submit():
        user = services.unlock_user(db.session(), actor=current_user, user_id=user_id)
        flash(f"{user.username} is unlocked.", "success")
    return redirect(url_for("admin.edit_user", user_id=user_id))


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@allow(Role.ADMIN)
def set_password(user_id: int):
    form = SetPasswordForm()
    if form.validate_on_submit():
        try:
            user = services.set_password(
                db.session(), actor=current_user, user_id=user_id, password=form.password.data
            )
        except DomainError as exc:
            flash(exc.message, "error")
        else:
            flash(f"Temporary password set; {user.username} must change it at login.", "success")
    else:
        flash("Type the new temporary password.", "error")
    return redirect(url_for("admin.edit_user", user_id=user_id))


@bp.route("/tokens/<int:token_id>/revoke", methods=["POST"])
@allow(Role.ADMIN)
def revoke_token(token_id: int):
    if ConfirmForm().validate_on_submit():
        token = services.revoke_api_token(db.session(), actor=current_user, token_id=token_id)
        flash(f"Token {token.prefix}… revoked.", "success")
        return redirect(url_for("admin.edit_user", user_id=token.user_id))
    return redirect(url_for("admin.users"))


@bp.route("/sites")
@allow(Role.ADMIN)
def sites():
    rows = db.session().scalars(select(Site).order_by(Site.code)).all()
    return render_template("admin/sites.html", sites=rows)


@bp.route("/sites/new", methods=["GET", "POST"])
@allow(Role.ADMIN)
def new_site():
    form = SiteForm()
    status = 200
    if form.validate_on_submit():
        try:
            site = services.create_site(
                db.session(),
                actor=current_user,
                code=form.code.data,
                name=form.name.data,
                city=form.city.data or "",
                isbt_fin=form.isbt_fin.data,
            )
        except DomainError as exc:
            status = _show_error(form, exc)
        else:
            flash(f"Site {site.code} created.", "success")
            return redirect(url_for("admin.sites"))
    elif request.method == "POST":
        status = 422
    return render_template("admin/site_form.html", form=form, site=None), status


@bp.route("/sites/<int:site_id>", methods=["GET", "POST"])
@allow(Role.ADMIN)
def edit_site(site_id: int):
    site = db.session().get(Site, site_id) or abort(404)
    form = SiteForm(obj=site)
    del form.code  # the code is on printed labels and identifiers: it never changes
    status = 200
    if form.validate_on_submit():
        try:
            services.update_site(
                db.session(),
                actor=current_user,
                site_id=site.id,
                name=form.name.data,
                city=form.city.data or "",
                isbt_fin=form.isbt_fin.data,
                active=form.active.data,
            )
        except DomainError as exc:
            status = _show_error(form, exc)
        else:
            flash(f"Site {site.code} saved.", "success")
            return redirect(url_for("admin.sites"))
    elif request.method == "POST":
        status = 422
    return render_template("admin/site_form.html", form=form, site=site), status
