"""Small built-in English corpus used to train the built-in tokenizer deterministically (no download)."""

from __future__ import annotations

CORPUS = """
Hello, and thank you for contacting our support team. My name is Alex and I will be happy to help you today.
Thanks for reaching out! I'm sorry to hear that you are having trouble with your account.
Could you please tell me the email address associated with your account and your order number?
I understand how frustrating this must be. Let me look into it for you right away.
I have checked your order and it was shipped yesterday. You should receive it within three to five business days.
You can track your package at any time from the Orders page in your account.
To reset your password, click on "Forgot password" on the sign in page and follow the instructions in the email.
If you do not see the email, please check your spam or junk folder.
We offer a full refund within thirty days of purchase. Please return the item in its original packaging.
Your refund has been processed and should appear on your statement within five to ten business days.
I have updated your billing information. The next payment will be charged to the new card.
Your subscription will renew automatically on the first day of each month unless you cancel it.
You can cancel your subscription at any time from the Billing section of your settings.
We apologize for the inconvenience. Our engineers are aware of the issue and are working on a fix.
Please try clearing your browser cache and cookies, then sign in again.
Make sure that the app is updated to the latest version, and restart your device.
Is there anything else I can help you with today? Have a great day!
Thank you for your patience. I have escalated your request to our technical team.
The delivery address can be changed before the order ships. After that, please contact the carrier.
Unfortunately, we cannot change an order once it has been shipped, but you can return it for free.
Our customer service team is available Monday to Friday, from nine in the morning to six in the evening.
You will receive a confirmation email once your request has been completed.
I would be glad to help you upgrade your plan. The premium plan includes priority support and more storage.
The discount code must be entered at checkout before you confirm the payment.
It looks like the payment was declined by your bank. Please contact your bank or try another payment method.
We have sent a replacement item at no extra cost. I am sorry that your product arrived damaged.
To update your shipping address, go to Settings, then Addresses, and click Edit.
Two-factor authentication adds an extra layer of security to your account.
Your data is stored securely and we never share your personal information with third parties.
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
What is the weather like today? It is sunny and warm, with a light breeze from the west.
The meeting has been moved to Thursday afternoon at three o'clock. Please let me know if that works for you.
She opened the window, looked at the garden, and smiled because the flowers had finally started to bloom.
Learning a new language takes time, practice, and a lot of patience, but it is worth the effort.
The computer would not start, so he checked the power cable, the battery, and the screen.
Please note that prices, taxes and shipping fees may change depending on your country and region.
Questions, answers, help, issue, problem, order, product, service, account, payment, refund, return,
delivery, shipping, invoice, receipt, password, email, phone, number, address, customer, support, team.
Yes, no, maybe, please, thanks, sorry, welcome, hello, goodbye, today, tomorrow, yesterday, week, month, year.
I can, you can, we can, they can, it is, it was, there is, there are, we will, you will, I will, you have.
One, two, three, four, five, six, seven, eight, nine, ten, first, second, third, last, next, previous.
The system said: "Error 404: page not found." The user asked: "How do I fix this?" The assistant replied.
{"name": "get_order_status", "arguments": {"order_id": "A12345"}} function call result status shipped.
"""
