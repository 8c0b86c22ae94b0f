"""Conformance: every file of the shared corpus decodes into the events it contains.

``EXPECTED`` lists, per file, its events in order as ``kind:selector`` (message type, status
value, error code, change field); ``+raw`` marks a message kept whole in ``Message.raw`` (a type,
or interactive type, this version does not model). It was derived from the files themselves,
not from the decoder: messages, statuses and errors of each ``messages`` value in that order,
every other field as a change. Hand-checked exceptions: the ``MALFORMED`` files carry no
``field`` where one is expected (a change of field None); two netflie files put placeholder
strings where numbers belong (the message becomes a ``messages`` change, kept whole: only a
string holding a number is read as one); the
``DOC_WRONG_FIELD`` file is a quality update sent as a status update (decoded as what its field says).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.conftest import SHARED_PAYLOADS
from wa_middleware import Change, Error, Message, Status, decode_delivery
from wa_middleware.events.models import (
    AccountUpdate,
    MessageTemplateQualityUpdate,
    MessageTemplateStatusUpdate,
    PhoneNumberQualityUpdate,
    TemplateCategoryUpdate,
)

pytestmark = pytest.mark.skipif(
    not SHARED_PAYLOADS.is_dir(), reason="the shared payload corpus is not beside this checkout"
)

EXPECTED: dict[str, tuple[str, ...]] = {
    "cloud_MALFORMED_account_update_partner_app_installed_field_in_entry__meta_docs_account_update_8.json": (
        "change:None",
    ),
    "cloud_MALFORMED_account_update_partner_app_installed_field_in_entry_template__meta_docs_app_only_install_3.json": (
        "change:None",
    ),
    "cloud_MALFORMED_account_update_partner_app_uninstalled_field_in_value__meta_docs_account_update_9.json": (
        "change:None",
    ),
    "cloud_account_alerts__meta_docs_account_alerts_1.json": ("change:account_alerts",),
    "cloud_account_review_update__bindambc.json": ("change:account_review_update",),
    "cloud_account_review_update__meta_docs_account_review_update_1.json": ("change:account_review_update",),
    "cloud_account_review_update__meta_docs_manage_webhooks_14.json": ("change:account_review_update",),
    "cloud_account_settings_update_calling__meta_docs_via_vaam.json": ("change:account_settings_update",),
    "cloud_account_update_account_deleted__meta_docs_account_update_1.json": ("change:account_update",),
    "cloud_account_update_account_deleted__pywa.json": ("change:account_update",),
    "cloud_account_update_account_disabled__pywa.json": ("change:account_update",),
    "cloud_account_update_account_offboarded__meta_docs_onboarding_business_app_users_11.json": (
        "change:account_update",
    ),
    "cloud_account_update_account_offboarded__pywa.json": ("change:account_update",),
    "cloud_account_update_account_offboarded_template__meta_docs_onboarding_business_app_users_10.json": (
        "change:account_update",
    ),
    "cloud_account_update_account_reconnected__meta_docs_onboarding_business_app_users_13.json": (
        "change:account_update",
    ),
    "cloud_account_update_account_reconnected__pywa.json": ("change:account_update",),
    "cloud_account_update_account_reconnected_template__meta_docs_onboarding_business_app_users_12.json": (
        "change:account_update",
    ),
    "cloud_account_update_account_restriction__meta_docs_call_settings_17.json": ("change:account_update",),
    "cloud_account_update_account_restriction__meta_docs_call_settings_18.json": ("change:account_update",),
    "cloud_account_update_account_restriction__pywa.json": ("change:account_update",),
    "cloud_account_update_account_restriction_placeholders__bindambc.json": ("change:account_update",),
    "cloud_account_update_account_violation__meta_docs_account_update_2.json": ("change:account_update",),
    "cloud_account_update_account_violation__pywa.json": ("change:account_update",),
    "cloud_account_update_ad_account_linked__meta_docs_account_update_3.json": ("change:account_update",),
    "cloud_account_update_ad_account_linked__pywa.json": ("change:account_update",),
    "cloud_account_update_ad_account_linked_template__meta_docs_onboarding_13.json": ("change:account_update",),
    "cloud_account_update_auth_intl_price_eligibility_update__meta_docs_account_update_4.json": (
        "change:account_update",
    ),
    "cloud_account_update_authentication_international_eligibility__pywa.json": ("change:account_update",),
    "cloud_account_update_business_primary_location_country_update__meta_docs_account_update_11.json": (
        "change:account_update",
    ),
    "cloud_account_update_disabled_update__meta_docs_account_update_5.json": ("change:account_update",),
    "cloud_account_update_disabled_update_schedule_for_disable__bindambc.json": ("change:account_update",),
    "cloud_account_update_mm_api_for_wa_terms_of_service__pywa.json": ("change:account_update",),
    "cloud_account_update_mm_lite_terms_signed__meta_docs_account_update_6.json": ("change:account_update",),
    "cloud_account_update_mm_lite_terms_signed_template__meta_docs_onboarding_12.json": ("change:account_update",),
    "cloud_account_update_partner_added__meta_docs_account_update_7.json": ("change:account_update",),
    "cloud_account_update_partner_added__meta_docs_manage_webhooks_9.json": ("change:account_update",),
    "cloud_account_update_partner_added__pywa.json": ("change:account_update",),
    "cloud_account_update_partner_app_installed__pywa.json": ("change:account_update",),
    "cloud_account_update_partner_app_uninstalled__pywa.json": ("change:account_update",),
    "cloud_account_update_partner_app_uninstalled_template__meta_docs_app_only_install_4.json": (
        "change:account_update",
    ),
    "cloud_account_update_partner_client_certification_status_update__meta_docs_account_update_10.json": (
        "change:account_update",
    ),
    "cloud_account_update_partner_led_business_verification_status__pywa.json": ("change:account_update",),
    "cloud_account_update_partner_removed__pywa.json": ("change:account_update",),
    "cloud_account_update_partner_removed_coexistence__meta_docs_via_vaam.json": ("change:account_update",),
    "cloud_account_update_partner_removed_wa_app_disconnection__pywa.json": ("change:account_update",),
    "cloud_account_update_pricing_tiering_update__pywa.json": ("change:account_update",),
    "cloud_account_update_primary_business_location_set__pywa.json": ("change:account_update",),
    "cloud_account_update_verified_account__bindambc.json": ("change:account_update",),
    "cloud_account_update_verified_account__meta_docs_manage_webhooks_12.json": ("change:account_update",),
    "cloud_account_update_volume_based_pricing_tier_update__meta_docs_pricing_0.json": ("change:account_update",),
    "cloud_automatic_events__meta_docs_automatic_events_api_1.json": ("change:automatic_events",),
    "cloud_automatic_events__meta_docs_automatic_events_api_3.json": ("change:automatic_events",),
    "cloud_business_capability_update__meta_docs_business_capability_update_1.json": (
        "change:business_capability_update",
    ),
    "cloud_business_username_update_approved__restfb.json": ("change:business_username_update",),
    "cloud_calls_call_created_bsuid__meta_docs_via_vaam.json": ("change:calls",),
    "cloud_calls_connect_business_initiated__pywa.json": ("change:calls",),
    "cloud_calls_connect_business_initiated_partial_placeholders__meta_docs_business_initiated_calls_14.json": (
        "change:calls",
    ),
    "cloud_calls_connect_business_initiated_webrtc_connection__meta_docs_business_initiated_calls_2.json": (
        "change:calls",
    ),
    "cloud_calls_connect_real_sdp__meta_docs_reference_44.json": ("change:calls",),
    "cloud_calls_connect_user_initiated__pywa.json": ("change:calls",),
    "cloud_calls_connect_user_initiated_deeplink_partial_placeholders__meta_docs_user_initiated_calls_21.json": (
        "change:calls",
    ),
    "cloud_calls_recording_available__meta_docs_via_vaam.json": ("change:calls",),
    "cloud_calls_status_ringing__pywa.json": ("change:calls",),
    "cloud_calls_terminate_failed_value_errors__meta_docs_via_vaam.json": ("change:calls",),
    "cloud_calls_terminate_with_errors__pywa.json": ("change:calls",),
    "cloud_flows_client_error_rate__meta_docs_via_vaam.json": ("change:flows",),
    "cloud_flows_endpoint_error_rate__meta_docs_via_vaam.json": ("change:flows",),
    "cloud_flows_status_change__meta_docs_via_vaam.json": ("change:flows",),
    "cloud_group_lifecycle_update_mixed__meta_docs_via_vaam.json": ("change:group_lifecycle_update",),
    "cloud_group_participants_update_mixed__meta_docs_via_vaam.json": ("change:group_participants_update",),
    "cloud_group_settings_update_template_string_codes__meta_docs_webhooks_13.json": ("change:group_settings_update",),
    "cloud_group_status_update_suspend_template__meta_docs_webhooks_14.json": ("change:group_status_update",),
    "cloud_group_status_update_template__meta_docs_webhooks_15.json": ("change:group_status_update",),
    "cloud_history_declined_errors__meta_docs_via_vaam.json": ("change:history",),
    "cloud_history_media_messages__meta_docs_onboarding_business_app_users_20.json": ("change:history",),
    "cloud_history_threads__meta_docs_onboarding_business_app_users_19.json": ("change:history",),
    "cloud_message_audio_forwarded__pywa.json": ("message:audio",),
    "cloud_message_audio_voice_2022_escaped_slash__restfb.json": ("message:audio",),
    "cloud_message_audio_voice__bindambc.json": ("message:audio",),
    "cloud_message_audio_voice__pywa.json": ("message:audio",),
    "cloud_message_audio_voice_with_url__meta_docs_audio_1.json": ("message:audio",),
    "cloud_message_button__bindambc.json": ("message:button",),
    "cloud_message_button__meta_docs_button_1.json": ("message:button",),
    "cloud_message_button__pywa.json": ("message:button",),
    "cloud_message_button_auth_template_from_logical_id__meta_docs_autofill_button_authentication_templates_3.json": (
        "message:button",
    ),
    "cloud_message_button_context_all_fields_referral_placeholders__netflie.json": ("message:button",),
    "cloud_message_button_no_context_from_user_id__pywa.json": ("message:button",),
    "cloud_message_contacts__bindambc.json": ("message:contacts",),
    "cloud_message_contacts__meta_docs_contacts_1.json": ("message:contacts",),
    "cloud_message_contacts__pywa.json": ("message:contacts",),
    "cloud_message_contacts_all_fields_placeholders__netflie.json": ("message:contacts",),
    "cloud_message_contacts_name_only__restfb.json": ("message:contacts",),
    "cloud_message_contacts_request_vcard_origin_bsuid__restfb.json": ("message:contacts",),
    "cloud_message_contacts_two_cards_localized_phone_type_redacted__restfb.json": ("message:contacts",),
    "cloud_message_document__bindambc.json": ("message:document",),
    "cloud_message_document__meta_docs_document_1.json": ("message:document",),
    "cloud_message_document_forwarded__pywa.json": ("message:document",),
    "cloud_message_document_zip_escaped_slash__restfb.json": ("message:document",),
    "cloud_message_edit__meta_docs_onboarding_business_app_users_15.json": ("message:edit",),
    "cloud_message_edit_image__pywa.json": ("message:edit",),
    "cloud_message_edit_template__meta_docs_onboarding_business_app_users_14.json": ("message:edit",),
    "cloud_message_image__bindambc.json": ("message:image",),
    "cloud_message_image__pywa.json": ("message:image",),
    "cloud_message_image_caption_escaped_slash__restfb.json": ("message:image",),
    "cloud_message_image_with_url__meta_docs_image_1.json": ("message:image",),
    "cloud_message_image_with_url__pywa.json": ("message:image",),
    "cloud_message_interactive_button_reply__meta_docs_interactive_2.json": ("message:interactive",),
    "cloud_message_interactive_button_reply__meta_docs_interactive_reply_buttons_messages_7.json": (
        "message:interactive",
    ),
    "cloud_message_interactive_button_reply__pywa.json": ("message:interactive",),
    "cloud_message_interactive_call_permission_reply_accept__pywa.json": ("message:interactive",),
    "cloud_message_interactive_call_permission_reply_bsuid_username__meta_docs_via_vaam.json": ("message:interactive",),
    "cloud_message_interactive_call_permission_reply_reject__pywa.json": ("message:interactive",),
    "cloud_message_interactive_list_reply__meta_docs_interactive_1.json": ("message:interactive",),
    "cloud_message_interactive_list_reply__meta_docs_interactive_list_messages_3.json": ("message:interactive",),
    "cloud_message_interactive_list_reply__pywa.json": ("message:interactive",),
    "cloud_message_interactive_list_reply_description__pywa.json": ("message:interactive",),
    "cloud_message_interactive_missing_body_value_errors__pywa.json": ("message:interactive+raw", "error:131000"),
    "cloud_message_interactive_nfm_reply__pywa.json": ("message:interactive",),
    "cloud_message_interactive_nfm_reply_address_message__meta_docs_via_vaam.json": ("message:interactive",),
    "cloud_message_interactive_nfm_reply_flow__meta_docs_via_vaam.json": ("message:interactive",),
    "cloud_message_interactive_nfm_reply_no_flow_token__pywa.json": ("message:interactive",),
    "cloud_message_interactive_payment_method_template__meta_docs_one_click_payments_1.json": (
        "message:interactive+raw",
    ),
    "cloud_message_location__meta_docs_location_1.json": ("message:location",),
    "cloud_message_location_address_escaped_unicode__restfb.json": ("message:location",),
    "cloud_message_location_current__pywa.json": ("message:location",),
    "cloud_message_location_named__pywa.json": ("message:location",),
    "cloud_message_location_reply_to_location_request__meta_docs_location_request_messages_4.json": (
        "message:location",
    ),
    "cloud_message_location_string_placeholders__netflie.json": (
        "change:messages",
    ),  # latitude/longitude are placeholders
    "cloud_message_location_url_only__bindambc.json": ("message:location",),
    "cloud_message_order__meta_docs_order_1.json": ("message:order",),
    "cloud_message_order__pywa.json": ("message:order",),
    "cloud_message_order_mpm_no_text__meta_docs_mpm_templates_6.json": ("message:order",),
    "cloud_message_order_string_placeholders__netflie.json": (
        "change:messages",
    ),  # quantity/item_price are placeholders
    "cloud_message_reaction__bindambc.json": ("message:reaction",),
    "cloud_message_reaction__meta_docs_reaction_1.json": ("message:reaction",),
    "cloud_message_reaction__pywa.json": ("message:reaction",),
    "cloud_message_reaction_removed__meta_docs_reaction_2.json": ("message:reaction",),
    "cloud_message_reaction_removed_empty_emoji__pywa.json": ("message:reaction",),
    "cloud_message_reaction_removed_no_emoji__pywa.json": ("message:reaction",),
    "cloud_message_reaction_skin_tone_emoji__restfb.json": ("message:reaction",),
    "cloud_message_request_welcome__pywa.json": ("message:request_welcome",),
    "cloud_message_revoke__meta_docs_onboarding_business_app_users_17.json": ("message:revoke",),
    "cloud_message_revoke_placeholders__pywa.json": ("message:revoke",),
    "cloud_message_revoke_template__meta_docs_onboarding_business_app_users_16.json": ("message:revoke",),
    "cloud_message_sticker__bindambc.json": ("message:sticker",),
    "cloud_message_sticker__pywa.json": ("message:sticker",),
    "cloud_message_sticker_animated__pywa.json": ("message:sticker",),
    "cloud_message_sticker_animated_with_url__meta_docs_sticker_1.json": ("message:sticker",),
    "cloud_message_sticker_no_animated_escaped_slash__restfb.json": ("message:sticker",),
    "cloud_message_system_customer_identity_changed__pywa.json": ("message:system",),
    "cloud_message_system_user_changed_number__pywa.json": ("message:system",),
    "cloud_message_system_user_changed_number_customer_placeholders__netflie.json": ("message:system",),
    "cloud_message_system_user_changed_number_lrm__pywa.json": ("message:system",),
    "cloud_message_system_user_changed_number_no_contacts__meta_docs_system_1.json": ("message:system",),
    "cloud_message_system_user_changed_number_template__meta_docs_system_0.json": ("message:system",),
    "cloud_message_system_user_changed_user_id__meta_docs_via_vaam.json": ("message:system",),
    "cloud_message_system_user_changed_user_id_no_from__restfb.json": ("message:system",),
    "cloud_message_template_components_update__meta_docs_message_template_components_update_1.json": (
        "change:message_template_components_update",
    ),
    "cloud_message_template_components_update__pywa.json": ("change:message_template_components_update",),
    "cloud_message_template_quality_update_DOC_WRONG_FIELD__meta_docs_message_template_quality_update_1.json": (
        "change:message_template_status_update",
    ),
    "cloud_message_template_quality_update__pywa.json": ("change:message_template_quality_update",),
    "cloud_message_template_status_update_approved__meta_docs_manage_webhooks_15.json": (
        "change:message_template_status_update",
    ),
    "cloud_message_template_status_update_approved__meta_docs_message_template_status_update_1.json": (
        "change:message_template_status_update",
    ),
    "cloud_message_template_status_update_approved__pywa.json": ("change:message_template_status_update",),
    "cloud_message_template_status_update_flagged_disable_info__bindambc.json": (
        "change:message_template_status_update",
    ),
    "cloud_message_template_status_update_flagged_disable_info__restfb.json": (
        "change:message_template_status_update",
    ),
    "cloud_message_template_status_update_rejected__bindambc.json": ("change:message_template_status_update",),
    "cloud_message_template_status_update_rejected_info__pywa.json": ("change:message_template_status_update",),
    "cloud_message_template_status_update_rejected_rejection_info__meta_docs_message_template_status_update_2.json": (
        "change:message_template_status_update",
    ),
    "cloud_message_text__bindambc.json": ("message:text",),
    "cloud_message_text__meta_docs_via_vaam.json": ("message:text",),
    "cloud_message_text__pywa.json": ("message:text",),
    "cloud_message_text_bsuid_only_no_from__meta_docs_business_scoped_user_ids_25.json": ("message:text",),
    "cloud_message_text_bsuid_only_no_from__netflie.json": ("message:text",),
    "cloud_message_text_contact_without_profile__netflie.json": ("message:text",),
    "cloud_message_text_context_referred_product__meta_docs_text_2.json": ("message:text",),
    "cloud_message_text_conversation_context_summary__meta_docs_via_vaam.json": ("message:text",),
    "cloud_message_text_forwarded__pywa.json": ("message:text",),
    "cloud_message_text_frequently_forwarded__pywa.json": ("message:text",),
    "cloud_message_text_from_differs_from_wa_id__meta_docs_get_started_0.json": ("message:text",),
    "cloud_message_text_from_phone_number_id__bindambc.json": ("message:text",),
    "cloud_message_text_group__meta_docs_via_vaam.json": ("message:text",),
    "cloud_message_text_group_bsuid_no_from__restfb.json": ("message:text",),
    "cloud_message_text_group_template__meta_docs_groups_messaging_3.json": ("message:text",),
    "cloud_message_text_phone_number_id_placeholder__meta_docs_get_started_for_solution_partners_6.json": (
        "message:text",
    ),
    "cloud_message_text_placeholders__360dialog_docs.json": ("message:text",),
    "cloud_message_text_referral_ad_video_placeholders__restfb.json": ("message:text",),
    "cloud_message_text_referral_ctwa_ref__meta_docs_via_vaam.json": ("message:text",),
    "cloud_message_text_referral_ctwa_welcome_message__meta_docs_text_3.json": ("message:text",),
    "cloud_message_text_referral_placeholders__pywa.json": ("message:text",),
    "cloud_message_text_reply_context__pywa.json": ("message:text",),
    "cloud_message_text_template_plan_a_trip__meta_docs_conversational_components_1.json": ("message:text",),
    "cloud_message_text_template_slash_command__meta_docs_conversational_components_2.json": ("message:text",),
    "cloud_message_text_username_empty_wa_id_and_from__meta_bsuid_docs.json": ("message:text",),
    "cloud_message_text_wa_id_and_user_id__netflie.json": ("message:text",),
    "cloud_message_unknown_2022_legacy_errors__restfb.json": ("message:unknown",),
    "cloud_message_unknown_legacy_errors_placeholders__netflie.json": ("message:unknown",),
    "cloud_message_unsupported_2023_redacted__restfb.json": ("message:unsupported",),
    "cloud_message_unsupported__pywa.json": ("message:unsupported",),
    "cloud_message_unsupported_deleted_by_user__bindambc.json": ("message:unsupported",),
    "cloud_message_unsupported_group_130501__meta_docs_via_vaam.json": ("message:unsupported",),
    "cloud_message_unsupported_type_edit__meta_docs_unsupported_1.json": ("message:unsupported",),
    "cloud_message_unsupported_with_type__pywa.json": ("message:unsupported",),
    "cloud_message_video__bindambc.json": ("message:video",),
    "cloud_message_video__meta_docs_video_1.json": ("message:video",),
    "cloud_message_video_caption_escaped_slash__restfb.json": ("message:video",),
    "cloud_message_video_forwarded__pywa.json": ("message:video",),
    "cloud_messaging_handovers_control_passed__meta_docs_via_vaam.json": ("change:messaging_handovers",),
    "cloud_multiple_changes_text_placeholders__netflie.json": ("message:text", "message:text"),
    "cloud_partner_solutions_solution_created__meta_docs_partner_solutions_1.json": ("change:partner_solutions",),
    "cloud_payment_configuration_update__meta_docs_onboarding_apis_19.json": ("change:payment_configuration_update",),
    "cloud_payment_configuration_update__meta_docs_payment_configuration_update_1.json": (
        "change:payment_configuration_update",
    ),
    "cloud_phone_number_name_update__bindambc.json": ("change:phone_number_name_update",),
    "cloud_phone_number_name_update__meta_docs_manage_webhooks_10.json": ("change:phone_number_name_update",),
    "cloud_phone_number_name_update_approved__meta_docs_phone_number_name_update_1.json": (
        "change:phone_number_name_update",
    ),
    "cloud_phone_number_quality_update_flagged__bindambc.json": ("change:phone_number_quality_update",),
    "cloud_phone_number_quality_update_flagged__meta_docs_manage_webhooks_11.json": (
        "change:phone_number_quality_update",
    ),
    "cloud_phone_number_quality_update_throughput_upgrade__meta_docs_phone_number_quality_update_1.json": (
        "change:phone_number_quality_update",
    ),
    "cloud_security_pin_reset_request__meta_docs_security_1.json": ("change:security",),
    "cloud_smb_app_state_sync__meta_docs_smb_app_state_sync_1.json": ("change:smb_app_state_sync",),
    "cloud_smb_message_echoes_bsuid_no_to__meta_docs_via_vaam.json": ("change:smb_message_echoes",),
    "cloud_smb_message_echoes_edit__pywa.json": ("change:smb_message_echoes",),
    "cloud_smb_message_echoes_revoke__pywa.json": ("change:smb_message_echoes",),
    "cloud_smb_message_echoes_text__meta_docs_via_vaam.json": ("change:smb_message_echoes",),
    "cloud_smb_message_echoes_text_placeholders__pywa.json": ("change:smb_message_echoes",),
    "cloud_status_delivered__pywa.json": ("status:delivered",),
    "cloud_status_delivered_authentication__netflie.json": ("status:delivered",),
    "cloud_status_delivered_bsuid_only_no_recipient_id__meta_docs_via_vaam.json": ("status:delivered",),
    "cloud_status_delivered_bsuid_only_status_parent_user_id__meta_docs_business_scoped_user_ids_23.json": (
        "status:delivered",
    ),
    "cloud_status_delivered_bsuid_parent_recipient_user_id__restfb.json": ("status:delivered",),
    "cloud_status_delivered_bsuid_username_parent_recipient_user_id__meta_docs_business_scoped_user_ids_22.json": (
        "status:delivered",
    ),
    "cloud_status_delivered_business_initiated__bindambc.json": ("status:delivered",),
    "cloud_status_delivered_cbp_service__meta_docs_messages_1.json": ("status:delivered",),
    "cloud_status_delivered_pmp_to_bsuid_empty_recipient__meta_bsuid_docs.json": ("status:delivered",),
    "cloud_status_delivered_pmp_username_phone__meta_bsuid_docs.json": ("status:delivered",),
    "cloud_status_failed_131026_2023__restfb.json": ("status:failed",),
    "cloud_status_failed_131036__meta_docs_no_storage_4.json": ("status:failed",),
    "cloud_status_failed_131047_reengagement__bindambc.json": ("status:failed",),
    "cloud_status_failed_131049__meta_docs_status_3.json": ("status:failed",),
    "cloud_status_failed_131053_media_upload__bindambc.json": ("status:failed",),
    "cloud_status_failed__pywa.json": ("status:failed",),
    "cloud_status_failed_group_131020__meta_docs_via_vaam.json": ("status:failed",),
    "cloud_status_failed_minimal_error__netflie.json": ("status:failed",),
    "cloud_status_group_multiple_pricing_placements__meta_docs_via_vaam.json": (
        "status:read",
        "status:read",
        "status:delivered",
    ),
    "cloud_status_played__pywa.json": ("status:played",),
    "cloud_status_read__pywa.json": ("status:read",),
    "cloud_status_read_conversation_int_expiration__netflie.json": ("status:read",),
    "cloud_status_read_group_participant_bsuid__restfb.json": ("status:read",),
    "cloud_status_read_group_placeholders__pywa.json": ("status:read",),
    "cloud_status_read_minimal__bindambc.json": ("status:read",),
    "cloud_status_sent__pywa.json": ("status:sent",),
    "cloud_status_sent_biz_opaque_callback_data__pywa.json": ("status:sent",),
    "cloud_status_sent_business_initiated__bindambc.json": ("status:sent",),
    "cloud_status_sent_cbp_user_initiated_placeholders__restfb.json": ("status:sent",),
    "cloud_status_sent_pmp_conversation__meta_docs_status_1.json": ("status:sent",),
    "cloud_status_sent_v24_no_conversation_no_pricing__meta_docs_status_2.json": ("status:sent",),
    "cloud_template_category_update__pywa.json": ("change:template_category_update",),
    "cloud_template_category_update_completed__meta_docs_template_category_update_2.json": (
        "change:template_category_update",
    ),
    "cloud_template_category_update_impending__meta_docs_template_category_update_1.json": (
        "change:template_category_update",
    ),
    "cloud_user_id_update__meta_docs_via_vaam.json": ("change:user_id_update",),
    "cloud_user_preferences_resume__pywa.json": ("change:user_preferences",),
    "cloud_user_preferences_resume_contact_only_wa_id__meta_docs_user_preferences_1.json": ("change:user_preferences",),
    "cloud_user_preferences_signup__pywa.json": ("change:user_preferences",),
    "cloud_value_errors_130429_rate_limit__meta_docs_errors_1.json": ("error:130429",),
    "cloud_value_errors_131035_retention__meta_docs_no_storage_5.json": ("error:131035",),
    "onprem_message_button_payload_null_context__vumi_whatsapp.json": ("message:button",),
    "onprem_message_contacts_full_docs__tock.json": ("message:contacts",),
    "onprem_message_contacts_full_with_image_ims__vumi_whatsapp.json": ("message:contacts",),
    "onprem_message_document_docs__tock.json": ("message:document",),
    "onprem_message_document_no_contacts__vumi_whatsapp.json": ("message:document",),
    "onprem_message_image_docs__tock.json": ("message:image",),
    "onprem_message_image_no_contacts__vumi_whatsapp.json": ("message:image",),
    "onprem_message_location__vumi_whatsapp.json": ("message:location",),
    "onprem_message_location_docs__tock.json": ("message:location",),
    "onprem_message_sticker_with_metadata__vumi_whatsapp.json": ("message:sticker",),
    "onprem_message_system_group_added_legacy__tock.json": ("message:system",),
    "onprem_message_system_user_changed_number_new_wa_id__vumi_whatsapp.json": ("message:system",),
    "onprem_message_system_user_identity_changed__vumi_whatsapp.json": ("message:system",),
    "onprem_message_text__vumi_whatsapp.json": ("message:text",),
    "onprem_message_text_docs__tock.json": ("message:text",),
    "onprem_message_text_forwarded__vumi_whatsapp.json": ("message:text",),
    "onprem_message_text_group_mentions_trailing_space_from__vumi_whatsapp.json": ("message:text",),
    "onprem_message_text_identity_block__vumi_whatsapp.json": ("message:text",),
    "onprem_message_text_reply_context__vumi_whatsapp.json": ("message:text",),
    "onprem_message_unknown_501__tock.json": ("message:unknown",),
    "onprem_message_unknown_501__vumi_whatsapp.json": ("message:unknown",),
    "onprem_message_video_frequently_forwarded__vumi_whatsapp.json": ("message:video",),
    "onprem_message_voice_docs__tock.json": ("message:voice",),
    "onprem_message_voice_legacy__vumi_whatsapp.json": ("message:voice",),
    "onprem_message_voice_real_capture__tock.json": ("message:voice",),
    "onprem_status_deleted__vumi_whatsapp.json": ("status:deleted",),
    "onprem_status_delivered_cbp__vumi_whatsapp.json": ("status:delivered",),
    "onprem_status_delivered_cbp_not_billable__vumi_whatsapp.json": ("status:delivered",),
    "onprem_status_delivered_minimal__vumi_whatsapp.json": ("status:delivered",),
    "onprem_status_failed_470__vumi_whatsapp.json": ("status:failed",),
    "onprem_status_failed_480_identity_change__vumi_whatsapp.json": ("status:failed",),
    "onprem_status_read_cbp__vumi_whatsapp.json": ("status:read",),
    "onprem_status_read_cbp_not_billable__vumi_whatsapp.json": ("status:read",),
    "onprem_status_read_minimal__vumi_whatsapp.json": ("status:read",),
    "onprem_status_sent_cbp_conversation_no_origin__vumi_whatsapp.json": ("status:sent",),
    "onprem_status_sent_cbp_not_billable__vumi_whatsapp.json": ("status:sent",),
    "onprem_value_errors_400_media_download__vumi_whatsapp.json": ("error:400",),
}


def _summary(body: bytes) -> tuple[str, ...]:
    out = []
    for event in decode_delivery(body, delivery_id="d1", received_at=1):
        data: Any = event.data
        if event.kind == "message":
            out.append(f"message:{data.type}" + ("+raw" if data.raw is not None else ""))
        elif event.kind == "status":
            out.append(f"status:{data.status}")
        elif event.kind == "error":
            out.append(f"error:{data.code}")
        else:
            out.append(f"change:{data.field}")
    return tuple(out)


def _files() -> list[str]:
    if not SHARED_PAYLOADS.is_dir():
        return []
    return sorted(p.name for p in SHARED_PAYLOADS.glob("*.json"))


def test_table_covers_the_corpus() -> None:
    assert set(EXPECTED) == set(_files())


@pytest.mark.parametrize("name", _files())
def test_file_decodes_into_its_events(name: str) -> None:
    body = (SHARED_PAYLOADS / name).read_bytes()
    assert _summary(body) == EXPECTED[name]


@pytest.mark.parametrize("name", _files())
def test_events_survive_the_retry_round_trip(name: str) -> None:
    """A retried callback gets its event back from msgpack, decoded as the kind's type."""
    types = {"message": Message, "status": Status, "error": Error, "change": Change}
    for event in decode_delivery((SHARED_PAYLOADS / name).read_bytes()):
        data = msgspec.msgpack.decode(msgspec.msgpack.encode(event.data), type=types[event.kind])
        assert data == event.data


def _one(name: str) -> Any:
    events = decode_delivery((SHARED_PAYLOADS / name).read_bytes())
    return events[0]


def test_text_message_and_its_context() -> None:
    event = _one("onprem_message_text__vumi_whatsapp.json")
    assert event.data.text.body == "Hello this is an answer"
    assert event.data.from_ == "16315551234"
    assert event.data.datetime.year == 2018
    assert event.ctx.sender_name == "Kerry Fisher"
    assert event.ctx.metadata is None  # the On-Premise body has none


def test_order_with_integer_prices() -> None:
    order = _one("cloud_message_order__pywa.json").data.order
    assert order.catalog_id == "354160437058781"
    assert [(i.product_retailer_id, i.quantity, i.item_price) for i in order.product_items] == [
        ("HAMBURGER", 3, 30.0),
        ("FRENCH_FRIES", 2, 35.0),
        ("SODA", 2, 10.0),
    ]


def test_contact_card() -> None:
    card = _one("cloud_message_contacts__meta_docs_contacts_1.json").data.contacts[0]
    assert card.name.formatted_name == "Barbara J. Johnson"
    assert card.org.company == "Social Tsunami"
    assert card.phones[0].wa_id == "14125550829"


def test_system_number_change() -> None:
    message = _one("cloud_message_system_user_changed_number__pywa.json").data
    assert message.system.type == "user_changed_number"
    assert message.system.wa_id == "972912345678"


def test_business_scoped_sender_without_phone() -> None:
    event = _one("cloud_message_text_bsuid_only_no_from__netflie.json")
    assert event.data.from_ is None
    assert event.ctx.contact.user_id == "BSUID_123"  # the only contact of the value
    assert event.ctx.sender_name == "NAME"


def test_reaction_removed_without_emoji() -> None:
    reaction = _one("cloud_message_reaction_removed_no_emoji__pywa.json").data.reaction
    assert reaction.message_id == "wamid.yzxyzx="
    assert reaction.removed


def test_click_to_whatsapp_referral() -> None:
    referral = _one("cloud_message_text_referral_ctwa_ref__meta_docs_via_vaam.json").data.referral
    assert (referral.source_type, referral.ref, referral.headline) == ("ad", "ref_12345", "Chat with us")


def test_flow_reply_response_decoded() -> None:
    nfm = _one("cloud_message_interactive_nfm_reply__pywa.json").data.interactive.nfm_reply
    assert nfm.response["flow_token"] == "AQAAAAACS5FpgQ_cAAAAAD0QI3s."
    assert nfm.name == "flow"


def test_edit_carries_the_new_message() -> None:
    edit = _one("cloud_message_edit_image__pywa.json").data.edit
    assert edit.message.type == "image"
    assert edit.message.image.caption == "Updated image caption"
    assert edit.original_message_id.startswith("wamid.HBgLMTQxMjU1")


def test_unknown_interactive_type_kept_raw() -> None:
    message = _one("cloud_message_interactive_payment_method_template__meta_docs_one_click_payments_1.json").data
    assert message.raw["interactive"]["payment_method"]["reference_id"] == "pix_test_webhook"


def test_failed_status_newer_error_shape() -> None:
    status = _one("cloud_status_failed_131049__meta_docs_status_3.json").data
    assert status.error.code == 131049
    assert status.error.detail.startswith("In order to maintain a healthy ecosystem")
    assert status.pricing is None


def test_failed_status_older_error_shape() -> None:
    status = _one("onprem_status_failed_470__vumi_whatsapp.json").data
    assert status.error.code == 470
    assert status.error.detail is None
    assert status.recipient == "12064001000"


def test_per_message_pricing_and_conversation() -> None:
    status = _one("cloud_status_sent_pmp_conversation__meta_docs_status_1.json").data
    assert (status.pricing.pricing_model, status.pricing.type, status.pricing.category) == (
        "PMP",
        "regular",
        "marketing",
    )
    assert status.conversation.origin.type == "marketing"
    assert status.conversation.expiration.year == 2025


def test_group_statuses_keep_their_participants() -> None:
    events = decode_delivery(
        (SHARED_PAYLOADS / "cloud_status_group_multiple_pricing_placements__meta_docs_via_vaam.json").read_bytes()
    )
    assert [e.data.recipient_participant_id for e in events] == ["16505551234", "16505551235", None]
    assert events[2].data.participant_recipient_id == "16505551236"
    assert events[0].data.conversation.pricing.pricing_model == "PMP"


@pytest.mark.parametrize(
    "name,cls,attribute,value",
    [
        pytest.param(
            "cloud_message_template_status_update_approved__pywa.json",
            MessageTemplateStatusUpdate,
            "event",
            "APPROVED",
            id="template-status",
        ),
        pytest.param(
            "cloud_message_template_quality_update__pywa.json",
            MessageTemplateQualityUpdate,
            "new_quality_score",
            "YELLOW",
            id="template-quality",
        ),
        pytest.param(
            "cloud_template_category_update_completed__meta_docs_template_category_update_2.json",
            TemplateCategoryUpdate,
            "new_category",
            "MARKETING",
            id="template-category",
        ),
        pytest.param(
            "cloud_phone_number_quality_update_flagged__bindambc.json",
            PhoneNumberQualityUpdate,
            "event",
            "FLAGGED",
            id="phone-quality",
        ),
        pytest.param(
            "cloud_account_update_account_violation__pywa.json",
            AccountUpdate,
            "event",
            "ACCOUNT_VIOLATION",
            id="account",
        ),
    ],
)
def test_typed_changes(name: str, cls: type, attribute: str, value: str) -> None:
    change = _one(name).data
    assert isinstance(change, Change)
    assert isinstance(change.typed, cls)
    assert getattr(change.typed, attribute) == value
    assert change.value[attribute] == value  # the raw value stays as sent


def test_malformed_keeps_the_value_whole() -> None:
    change = _one(
        "cloud_MALFORMED_account_update_partner_app_uninstalled_field_in_value__meta_docs_account_update_9.json"
    )
    assert change.kind == "change"
    assert change.data.field is None
    assert change.data.value["field"] == "account_update"


def test_wrongly_typed_message_kept_whole() -> None:
    event = _one("cloud_message_location_string_placeholders__netflie.json")
    assert (event.kind, event.data.field) == ("change", "messages")
    assert isinstance(event.data.value["location"]["latitude"], str)
    assert event.ctx.metadata is not None  # the rest of the value is still typed


def test_unknown_type_errors() -> None:
    message = _one("cloud_message_unsupported_group_130501__meta_docs_via_vaam.json").data
    assert message.type == "unsupported"
    assert message.errors[0].code == 130501
    assert message.group_id.startswith("Y2FwaV9ncm91cDox")


def test_status_gets_its_recipients_contact() -> None:
    event = _one(
        "cloud_status_delivered_bsuid_username_parent_recipient_user_id__meta_docs_business_scoped_user_ids_22.json"
    )
    assert event.kind == "status"
    assert event.ctx.contact.profile.username == "@pablomorales"
    assert event.ctx.contact.user_id == "US.13491208655302741918"


@pytest.mark.parametrize(
    "name,time",
    [
        pytest.param(
            "cloud_message_template_status_update_approved__meta_docs_message_template_status_update_1.json",
            1751247548,
            id="template-status",
        ),
        pytest.param(
            "cloud_phone_number_quality_update_flagged__meta_docs_manage_webhooks_11.json", 1731617831, id="quality"
        ),
        pytest.param(
            "cloud_account_update_account_offboarded_template__meta_docs_onboarding_business_app_users_10.json",
            None,
            id="placeholder",
        ),
    ],
)
def test_entry_time_reaches_the_context(name: str, time: int | None) -> None:
    assert _one(name).ctx.entry_time == time


def test_every_entry_time_of_the_corpus_reaches_its_events() -> None:
    """Every integer ``entry[].time`` in the corpus is on the context of each event of its entry."""
    checked = 0
    for name in _files():
        body = (SHARED_PAYLOADS / name).read_bytes()
        doc = msgspec.json.decode(body)
        entries = doc.get("entry") if isinstance(doc, dict) else None
        times = {
            entry["time"]
            for entry in entries or ()
            if isinstance(entry, dict) and type(entry.get("time")) is int and entry.get("changes")
        }
        if len(entries or ()) == 1 and times:
            assert {e.ctx.entry_time for e in decode_delivery(body)} == times, name
            checked += 1
    assert checked >= 30  # the corpus has a few dozen such bodies
