"""Forms shape and validate input; the services decide and save."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from lims.auth.models import Role

ROLE_CHOICES = [SelectChoice(role.value, role.label) for role in Role]


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
    new_password = PasswordField("New password", validators=[DataRequired(), Length(max=256)])
    confirm = PasswordField(
        "New password again",
        validators=[DataRequired(), EqualTo("new_password", message="The passwords differ.")],
    )


class UserForm(FlaskForm):
    full_name = StringField("Full name", validators=[DataRequired(), Length(max=200)])
    email = EmailField("E-mail", validators=[Optional(), Length(max=254)])
    role = SelectField("Role", choices=ROLE_CHOICES)
    site_id = SelectField("Site", coerce=int)
    active = BooleanField("Active", default=True)


class NewUserForm(UserForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField(
        "Initial password",
        description="The user must change it at first login.",
        validators=[DataRequired(), Length(max=256)],
    )


class SetPasswordForm(FlaskForm):
    password = PasswordField("New temporary password", validators=[DataRequired(), Length(max=256)])


class SiteForm(FlaskForm):
    code = StringField("Code", validators=[DataRequired(), Length(min=2, max=8)])
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    city = StringField("City", validators=[Optional(), Length(max=100)])
    isbt_fin = StringField(
        "ISBT 128 FIN",
        description="Facility identification number from ICCBBA, if the site has one.",
        validators=[Optional(), Length(min=5, max=5)],
    )
    active = BooleanField("Active", default=True)


class ConfirmForm(FlaskForm):
    """A form with only the CSRF token, for buttons that post."""
