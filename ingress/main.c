/* placeholder: replaced by the real daemon entry point */
int main(void)
{
    return 0;
}
